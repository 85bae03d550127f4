//! The admin-token Secret: the bearer token the operator uses on each node's admin API
//! (`POST /drain`, `/api/v1/publish`). It is generated once and never rotated by reconcile.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::RngCore;

use super::{admin_secret_name, owned_meta};
use crate::crd::WebSocketFleet;

/// Key of the token inside the Secret.
pub const TOKEN_KEY: &str = "token";

/// A new random admin token: 32 bytes from the OS-seeded CSPRNG, hex-encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The admin-token Secret holding `token`.
pub fn admin_token_secret(fleet: &WebSocketFleet, token: &str) -> Secret {
    Secret {
        metadata: owned_meta(fleet, admin_secret_name(fleet)),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Whether an existing Secret already holds a usable token (then it is kept as is).
pub fn has_token(secret: &Secret) -> bool {
    token(secret).is_some()
}

/// The token in a Secret: non-empty UTF-8 (surrounding whitespace, e.g. a trailing newline
/// from `kubectl create secret --from-file`, is not part of it).
pub fn token(secret: &Secret) -> Option<String> {
    let in_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .map(str::trim);
    let in_string_data = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .map(|v| v.trim());
    in_data
        .or(in_string_data)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn secret_carries_the_token_and_is_recognised() {
        let secret = admin_token_secret(&testing::minimal(), "abc");
        assert_eq!(secret.metadata.name.as_deref(), Some("chat-admin-token"));
        assert!(has_token(&secret));
        let written_as_string = Secret {
            string_data: Some(BTreeMap::from([(TOKEN_KEY.into(), "abc".into())])),
            ..Secret::default()
        };
        assert!(has_token(&written_as_string));
        assert_eq!(token(&written_as_string).as_deref(), Some("abc"));
        assert!(!has_token(&Secret::default()));
    }
}
