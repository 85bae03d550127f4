//! Admin API request bodies (`/api/v1/publish`, `/api/v1/send`): parsing must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet_gateway::admin::parse_body;
use wsfleet_gateway::api::{PublishBody, SendBody};
use wsfleet_gateway::protocol::{validate_channel, validate_client_id};

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = parse_body::<PublishBody>(data) {
        let _ = validate_channel(&body.channel);
    }
    if let Ok(body) = parse_body::<SendBody>(data) {
        let _ = validate_client_id(&body.to);
    }
});
