//! What channel names, client ids and request ids may be. The gateway refuses anything else
//! with `bad_request`; the clients check before sending, so a caller learns of a bad name
//! without a round trip.

/// Longest channel name, in bytes (names are ASCII, so also characters).
pub const MAX_CHANNEL_LEN: usize = 200;
/// Longest client id (`send.to`, a token's `sub`), in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// Longest request id echoed back in `ack`/`error`; longer ids are refused so a client cannot
/// make the server echo large strings.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Longest idempotency key of a publish, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// Checks a publish's idempotency key: 1..=128 bytes, no control characters.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(format!(
            "idempotency_key must be 1..={MAX_IDEMPOTENCY_KEY_LEN} bytes without control \
             characters"
        ));
    }
    Ok(())
}

/// Checks a channel name: 1..=200 characters of `[A-Za-z0-9:._\-/]`.
pub fn check_channel(channel: &str) -> Result<(), String> {
    if channel.is_empty() || channel.len() > MAX_CHANNEL_LEN {
        return Err(format!(
            "channel name must be 1..={MAX_CHANNEL_LEN} characters"
        ));
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-' | b'/');
    if !channel.bytes().all(allowed) {
        return Err("channel name may only contain A-Z a-z 0-9 : . _ - /".into());
    }
    Ok(())
}

/// Checks a client id: non-empty, at most 256 bytes, no control characters.
pub fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN || id.chars().any(char::is_control) {
        return Err(format!(
            "client id must be 1..={MAX_CLIENT_ID_LEN} bytes without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for good in ["a", "room:42", "a/b.c_d-e:f", &"x".repeat(200)] {
            assert_eq!(check_channel(good), Ok(()), "{good}");
        }
        for bad in ["", "has space", "ünï", "a*b", &"x".repeat(201)] {
            assert!(check_channel(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_ids() {
        for good in ["bob", "user@example.com", "ünïcode ok", &"x".repeat(256)] {
            assert_eq!(check_client_id(good), Ok(()), "{good}");
        }
        for bad in ["", "a\nb", "\u{7f}", &"x".repeat(257)] {
            assert!(check_client_id(bad).is_err(), "{bad:?}");
        }
    }
}
