//! Errors the client reports to its caller: refusals from the gateway (typed by their protocol
//! code) and local failures (not connected, connection lost, timeouts).

use std::fmt;
use std::time::Duration;

/// The `code` of a gateway `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    UnknownOp,
    /// A `refresh` token that does not verify.
    Unauthorized,
    Forbidden,
    TooLarge,
    RateLimited,
    NotFound,
    Internal,
    /// A code this client does not know yet (from a newer gateway).
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "bad_request" => ErrorCode::BadRequest,
            "unknown_op" => ErrorCode::UnknownOp,
            "unauthorized" => ErrorCode::Unauthorized,
            "forbidden" => ErrorCode::Forbidden,
            "too_large" => ErrorCode::TooLarge,
            "rate_limited" => ErrorCode::RateLimited,
            "not_found" => ErrorCode::NotFound,
            "internal" => ErrorCode::Internal,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    /// Codes that say "not now" rather than "never": the same request may succeed later or on
    /// another node (the gateway answers `internal` while its backplane is down).
    pub fn is_transient(&self) -> bool {
        matches!(self, ErrorCode::Internal | ErrorCode::RateLimited)
    }

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
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The gateway answered the request with an `error` frame.
    #[error("gateway refused the request ({code}): {message}")]
    Server { code: ErrorCode, message: String },
    #[error("invalid channel name {0:?}: 1..=200 characters of A-Z a-z 0-9 : . _ - /")]
    InvalidChannel(String),
    #[error("already subscribed to {0:?}")]
    AlreadySubscribed(String),
    #[error("not connected to any gateway")]
    NotConnected,
    /// The connection was lost after the request was sent: it may or may not have taken effect.
    #[error("connection lost before the gateway answered")]
    Disconnected,
    #[error("no answer from the gateway within {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("no endpoints configured")]
    NoEndpoints,
    /// The client was closed (or its connection task ended).
    #[error("client closed")]
    Closed,
}
