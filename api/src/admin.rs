//! The node's HTTP APIs as their callers see them: the admin port's `GET /status` report and
//! `POST /drain` request (the operator's), and the publish port's request bodies (app
//! services'). Both sides serialize these very types, so a renamed field fails to compile
//! rather than to parse.

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::GatewayConfig;

/// Longest reconnect window a node accepts in a drain request, in seconds.
pub const MAX_DRAIN_WINDOW_SECONDS: u64 = 3600;
/// Longest drain deadline a node accepts, in seconds.
pub const MAX_DRAIN_DEADLINE_SECONDS: u64 = 86_400;
/// Longest drain reason, in bytes: it is sent in each client's close frame, whose reason fits
/// 123 bytes (125 of payload minus the code).
pub const MAX_DRAIN_REASON_BYTES: usize = 123;
/// Reason given to clients when the request names none.
pub const DEFAULT_DRAIN_REASON: &str = "node draining";

/// Body of `POST /drain`: spread this node's clients' reconnects over `window_seconds`, and
/// exit after `deadline_seconds` at the latest. With `count`, a **partial drain**: only that
/// many clients are told to move (spread over the window the same way) and the node keeps
/// serving — for moving load off a busy node (rebalancing) without emptying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub window_seconds: u64,
    pub deadline_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl DrainRequest {
    /// Checks the request against the node's bounds; the error says what is wrong in words an
    /// operator can act on (the node answers it with `400`).
    pub fn check(&self) -> Result<(), String> {
        let (window, deadline) = (self.window_seconds, self.deadline_seconds);
        if !(1..=MAX_DRAIN_WINDOW_SECONDS).contains(&window) {
            return Err(format!(
                "window_seconds must be between 1 and {MAX_DRAIN_WINDOW_SECONDS}, got {window}"
            ));
        }
        if !(1..=MAX_DRAIN_DEADLINE_SECONDS).contains(&deadline) {
            return Err(format!(
                "deadline_seconds must be between 1 and {MAX_DRAIN_DEADLINE_SECONDS}, got {deadline}"
            ));
        }
        if deadline < window {
            return Err(format!(
                "deadline_seconds ({deadline}) must be at least window_seconds ({window})"
            ));
        }
        if self.count == Some(0) {
            return Err("count must be at least 1 (or left out for a full drain)".into());
        }
        let reason = self.reason();
        if reason.is_empty() || reason.len() > MAX_DRAIN_REASON_BYTES {
            return Err(format!(
                "reason must be 1 to {MAX_DRAIN_REASON_BYTES} bytes (it is sent in the close \
                 frame), got {}",
                reason.len()
            ));
        }
        Ok(())
    }

    /// The reason clients are told, or the default.
    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or(DEFAULT_DRAIN_REASON)
    }
}

/// A node's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Serving,
    Draining,
    Drained,
}

/// The state of a node's backplane, as `/status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackplaneState {
    /// In-process engine: no backplane, always usable (a single node). A Redis backplane is
    /// only ever `Up` or `Down`.
    Memory,
    /// The Redis subscription demonstrably delivers.
    Up,
    /// Redis is unreachable or the subscription stopped delivering; reconnecting.
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Draining => "draining",
            NodeState::Drained => "drained",
        }
    }
}

impl BackplaneState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackplaneState::Memory => "memory",
            BackplaneState::Up => "up",
            BackplaneState::Down => "down",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for BackplaneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A drain under way, as `/status` and the drain endpoints report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    #[serde(default)]
    pub reason: String,
    pub window_seconds: u64,
    /// When the node gives up waiting and exits (Unix milliseconds).
    pub deadline_unix_ms: u64,
    /// Connections still open.
    pub remaining: u64,
}

/// The reply of `GET /status`. Fields a newer node adds are ignored by older readers, and
/// fields an older node lacks take their defaults, so the operator and its nodes may differ
/// by a version during an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub version: String,
    pub state: NodeState,
    #[serde(default)]
    pub ready: bool,
    pub connections: u64,
    #[serde(default)]
    pub max_connections: u64,
    #[serde(default = "unknown_backplane")]
    pub backplane: BackplaneState,
    /// Why the backplane is down, in the words of the last failed attempt.
    #[serde(default)]
    pub backplane_error: Option<String>,
    #[serde(default)]
    pub drain: Option<DrainProgress>,
    /// The settings the node runs with, in the config file's keys, every one resolved (flag,
    /// environment, file or default); the Redis URL is left out. Read leniently: settings a
    /// reader does not know make this `None`, never a failed report.
    #[serde(default, deserialize_with = "lenient")]
    pub settings: Option<GatewayConfig>,
}

impl StatusReport {
    /// A report with only the essentials: `node` in `state` holding `connections`, not ready,
    /// no drain, its backplane down until said otherwise.
    pub fn new(node: impl Into<String>, state: NodeState, connections: u64) -> StatusReport {
        StatusReport {
            node: node.into(),
            version: String::new(),
            state,
            ready: false,
            connections,
            max_connections: 0,
            backplane: unknown_backplane(),
            backplane_error: None,
            drain: None,
            settings: None,
        }
    }
}

fn unknown_backplane() -> BackplaneState {
    BackplaneState::Down
}

/// `settings` as this version knows them, or `None` when a newer node sends keys it does not.
fn lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<GatewayConfig>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Settings {
        Known(Box<GatewayConfig>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Settings>::deserialize(deserializer)? {
        Some(Settings::Known(config)) => Some(*config),
        Some(Settings::Other(_)) | None => None,
    })
}

/// The reply of `POST /drain` (`202` when it started the drain, `200` when one was already
/// under way) and of `DELETE /drain` (`drain` is then `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    pub state: NodeState,
    #[serde(default)]
    pub started: bool,
    #[serde(default)]
    pub drain: Option<DrainProgress>,
}

/// Body of `POST /api/v1/publish`; `D` is the payload's type (the node keeps the raw JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest<D> {
    pub channel: String,
    pub data: D,
    /// Publish at most once per key and channel within the node's idempotency window: a
    /// retry after an unanswered request returns the first publish's offset and delivers
    /// nothing new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The reply of `POST /api/v1/publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishReply {
    pub offset: u64,
    pub epoch: String,
    /// True when the idempotency key had already published: nothing new was delivered.
    #[serde(default)]
    pub duplicate: bool,
}

/// Body of `POST /api/v1/send`: a direct message to client `to`, wherever it is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest<D> {
    pub to: String,
    pub data: D,
}

/// The body of every refusal of the admin and publish APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(window: u64, deadline: u64, reason: Option<&str>) -> DrainRequest {
        DrainRequest {
            window_seconds: window,
            deadline_seconds: deadline,
            reason: reason.map(str::to_string),
            count: None,
        }
    }

    #[test]
    fn drain_requests_are_checked_against_the_bounds() {
        assert_eq!(drain(30, 60, None).check(), Ok(()));
        assert_eq!(drain(30, 60, None).reason(), DEFAULT_DRAIN_REASON);
        assert_eq!(drain(3600, 86_400, Some("upgrade")).check(), Ok(()));
        let refused = [
            (
                drain(0, 60, None),
                "window_seconds must be between 1 and 3600, got 0",
            ),
            (
                drain(3601, 86_400, None),
                "window_seconds must be between 1 and 3600, got 3601",
            ),
            (
                drain(30, 86_401, None),
                "deadline_seconds must be between 1 and 86400, got 86401",
            ),
            (
                drain(30, 10, None),
                "deadline_seconds (10) must be at least window_seconds (30)",
            ),
            (drain(30, 60, Some("")), "reason must be 1 to 123 bytes"),
            (
                DrainRequest {
                    count: Some(0),
                    ..drain(30, 60, None)
                },
                "count must be at least 1",
            ),
        ];
        for (request, message) in refused {
            let err = request.check().expect_err(message);
            assert!(err.starts_with(message), "{err}");
        }
        assert!(drain(30, 60, Some(&"x".repeat(124))).check().is_err());
        let unknown = serde_json::from_str::<DrainRequest>(
            r#"{"window_seconds":1,"deadline_seconds":1,"windw":2}"#,
        );
        assert!(unknown.is_err(), "unknown fields are refused");
    }

    #[test]
    fn a_status_report_reads_old_and_new_nodes() {
        let old = r#"{"node":"n1","state":"draining","connections":7,
                      "drain":{"window_seconds":10,"deadline_unix_ms":5,"remaining":7}}"#;
        let report: StatusReport = serde_json::from_str(old).unwrap();
        assert_eq!((report.state, report.connections), (NodeState::Draining, 7));
        assert_eq!(report.settings, None);
        let newer = r#"{"state":"serving","connections":0,"backplane":"up","future":1,
                        "settings":{"max_connections":5,"a_key_from_the_future":true}}"#;
        let report: StatusReport = serde_json::from_str(newer).unwrap();
        assert_eq!(report.backplane, BackplaneState::Up);
        assert_eq!(
            report.settings, None,
            "unknown settings are dropped, not fatal"
        );
        let current = r#"{"state":"serving","connections":0,"settings":{"max_connections":5}}"#;
        let report: StatusReport = serde_json::from_str(current).unwrap();
        assert_eq!(report.settings.and_then(|s| s.max_connections), Some(5));
    }
}
