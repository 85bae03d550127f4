//! Connection lifecycle events an application can watch: connects, losses, reconnect delays,
//! token refreshes and subscriptions whose missed messages could not be recovered.

use std::time::Duration;

use crate::error::ErrorCode;

/// Something that happened to the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session started: the gateway's `welcome`.
    Connected { client_id: String, node: String },
    /// The node is draining: the client keeps reading and moves to the next endpoint after
    /// `after` (the gateway's jittered `reconnect` hint).
    Draining { after: Duration, reason: String },
    /// The connection ended; `code` is the WebSocket close code when the gateway sent one.
    Disconnected { code: Option<u16>, reason: String },
    /// The client waits `delay` before its next connection attempt.
    Reconnecting { delay: Duration, attempt: u32 },
    /// A resumed subscription missed messages the gateway could no longer replay.
    RecoveryFailed { channel: String },
    /// Offsets jumped: `missed` messages of `channel` were never delivered (dropped by the
    /// gateway for a slow consumer under `drop-oldest`, or beyond what history could replay).
    Gap { channel: String, missed: u64 },
    /// The gateway refused a subscription's resume for good (e.g. `forbidden`); its stream has
    /// ended. A refusal for now (`internal`, `rate_limited`) keeps the subscription: the client
    /// reconnects with backoff and resumes again.
    SubscriptionLost {
        channel: String,
        code: ErrorCode,
        message: String,
    },
    /// The gateway took a fresh token from the callback; the session now expires at
    /// `expires_at_ms` (ms since the Unix epoch).
    TokenRefreshed { expires_at_ms: u64 },
    /// A refresh failed (the callback erred or the gateway refused its token). It is retried
    /// after `retry_in`; `None` once the token has expired, when the gateway closes with 4001
    /// and the client reconnects with a fresh token.
    TokenRefreshFailed {
        reason: String,
        retry_in: Option<Duration>,
    },
    /// An `error` frame that answered no request of ours.
    ServerError { code: ErrorCode, message: String },
    /// The client stopped reconnecting after its configured number of attempts.
    GaveUp,
}
