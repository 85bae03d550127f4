//! Upgrade credentials (the `Authorization` header and the query string) → identity:
//! verification must never panic, and nothing unsigned may be accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet_gateway::auth::Authenticator;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (header, query) = text.split_once('\n').unwrap_or((text, ""));
    let auth = Authenticator::hs256(b"fuzz-secret");
    let result = auth.authenticate(Some(header), Some(query));
    // A random input cannot carry a valid HS256 signature for this secret.
    assert!(result.is_err(), "accepted {text:?}");
});
