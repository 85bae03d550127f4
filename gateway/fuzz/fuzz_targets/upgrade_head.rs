//! Upgrade request heads (everything a client sends before the `101`): parsing must never
//! panic, and an accepted head must leave the bytes after it to the WebSocket stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet_gateway::upgrade::{parse, refusal, switching_protocols};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some((request, head_len))) => {
            assert!(head_len <= data.len());
            let _ = switching_protocols(&request.key);
        }
        Ok(None) => {}
        Err(bad) => {
            let _ = refusal(bad.status(), &bad.to_string(), None);
        }
    }
});
