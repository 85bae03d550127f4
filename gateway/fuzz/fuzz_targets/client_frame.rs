//! Client text frames → protocol messages: parsing must never panic, and every accepted
//! message must satisfy the protocol's invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet_gateway::protocol::{ClientMessage, parse_client, validate_channel};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client(text, 65536) {
        Ok(message) => {
            if let Some(id) = message.request_id() {
                assert!(id.len() <= 128);
            }
            match &message {
                ClientMessage::Subscribe { channel, .. }
                | ClientMessage::Unsubscribe { channel, .. }
                | ClientMessage::Publish { channel, .. } => {
                    assert!(validate_channel(channel).is_ok())
                }
                ClientMessage::Send { to, .. } => assert!(!to.is_empty()),
            }
        }
        Err(error) => {
            // The error reply itself must be valid JSON.
            let frame = error.to_frame();
            assert!(serde_json_is_object(&frame), "{frame}");
        }
    }
});

fn serde_json_is_object(text: &str) -> bool {
    text.starts_with('{') && text.ends_with('}')
}
