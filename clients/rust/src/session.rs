//! What a session hands the application: which node it is on, the messages of its channels,
//! the messages sent to it by id, and what each request's `ack` reported.

use serde_json::Value;

/// The node a session is on, from its `welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub client_id: String,
    pub node: String,
    /// When the session's token expires (ms since the Unix epoch); moves on with each refresh.
    pub expires_at_ms: Option<u64>,
}

/// A message delivered on a subscribed channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub channel: String,
    pub offset: u64,
    pub data: Value,
}

/// A message sent to this client by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Direct {
    pub from: String,
    pub data: Value,
}

/// What an `ack` reported: for a subscribe, the channel's last offset and its epoch; for a
/// publish, the offset and epoch assigned to the message; nothing for other requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
    /// A publish whose idempotency key had already published: `offset` and `epoch` are the
    /// first publish's, and nothing new was delivered.
    pub duplicate: bool,
}
