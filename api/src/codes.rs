//! The codes a client is told: the `code` of an `error` frame, and the WebSocket close codes
//! of wsfleet's own (the standard ones, 1000–1015, keep their RFC 6455 meanings).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Close code of a connection whose token expired (`exp` plus the leeway) without a `refresh`:
/// the client should reconnect with a fresh token.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// The machine-readable `code` of an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A malformed frame, a missing field, a bad channel name or client id.
    BadRequest,
    UnknownOp,
    /// A `refresh` token that does not verify (signature, `exp`, `nbf`, `iss`, `aud`, `kid`).
    Unauthorized,
    /// The token does not allow this channel.
    Forbidden,
    TooLarge,
    RateLimited,
    /// No such client (a `send`).
    NotFound,
    /// The node cannot do it now (its backplane is down); another try may succeed.
    Internal,
    /// A code this side does not know (from a newer gateway).
    Other(String),
}

impl ErrorCode {
    /// The codes a gateway of this version sends.
    pub const KNOWN: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::Internal,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(code) => code,
        }
    }

    /// Reads a code; one this version does not know is kept as [`ErrorCode::Other`].
    pub fn parse(code: &str) -> ErrorCode {
        ErrorCode::KNOWN
            .into_iter()
            .find(|known| known.as_str() == code)
            .unwrap_or_else(|| ErrorCode::Other(code.to_owned()))
    }

    /// Codes that say "not now" rather than "never": the same request may succeed later or on
    /// another node.
    pub fn is_transient(&self) -> bool {
        matches!(self, ErrorCode::Internal | ErrorCode::RateLimited)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(ErrorCode::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_and_write_one_spelling() {
        for code in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::parse(code.as_str()), code);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(
            ErrorCode::parse("new_thing"),
            ErrorCode::Other("new_thing".into())
        );
        assert!(ErrorCode::Internal.is_transient() && !ErrorCode::Forbidden.is_transient());
    }
}
