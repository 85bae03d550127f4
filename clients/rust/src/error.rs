//! Errors the client reports to its caller: refusals from the gateway (typed by their protocol
//! code) and local failures (not connected, connection lost, timeouts).

use std::time::Duration;

/// The `code` of a gateway `error` frame: the contract's, shared with the gateway (a code
/// from a newer gateway is kept as `ErrorCode::Other`).
pub use wsfleet_api::ErrorCode;

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
