//! The wire protocol as the client sees it: frames the client sends and frames it receives,
//! as serde types mirroring the gateway's JSON text frames (`op`-tagged objects).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a subscription resumes a channel's history from: the last offset delivered, in the
/// epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// A frame sent by the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientFrame {
    Subscribe {
        channel: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<Since>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Unsubscribe {
        channel: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Publish {
        channel: String,
        data: Value,
        /// At most once per key and channel within the gateway's idempotency window.
        #[serde(skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Send {
        to: String,
        data: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A fresh token for this connection, before the current one expires.
    Refresh {
        token: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

impl ClientFrame {
    /// The JSON text of this frame. Serializing these types cannot fail: every key is a
    /// string and `Value` is always representable.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A frame received from the gateway.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ServerFrame {
    Welcome {
        client_id: String,
        node: String,
        #[serde(default)]
        heartbeat_ms: u64,
        /// When the connection's token expires (ms since the Unix epoch), if it has `exp`.
        #[serde(default)]
        expires_at_ms: Option<u64>,
    },
    Ack {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        offset: Option<u64>,
        #[serde(default)]
        epoch: Option<String>,
        #[serde(default)]
        recovered: Option<bool>,
        /// The token's new expiry, in the ack of a `refresh`.
        #[serde(default)]
        expires_at_ms: Option<u64>,
        /// `true` in the ack of a publish whose idempotency key had already published.
        #[serde(default)]
        duplicate: Option<bool>,
    },
    Error {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        id: Option<String>,
    },
    Message {
        channel: String,
        offset: u64,
        #[serde(default)]
        data: Value,
    },
    Direct {
        from: String,
        #[serde(default)]
        data: Value,
    },
    Reconnect {
        after_ms: u64,
        #[serde(default)]
        reason: String,
    },
}

impl ServerFrame {
    /// Parses one text frame. Unknown fields are ignored so newer gateways keep working; an
    /// unknown `op` or a malformed frame is an error for the caller to report, never a panic.
    pub fn decode(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Channel names are the contract's (1..=200 characters of `[A-Za-z0-9:._\-/]`); checked
/// before sending so a caller learns of a bad name without a round trip.
pub fn valid_channel(channel: &str) -> bool {
    wsfleet_api::names::check_channel(channel).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_client_frames_as_in_the_protocol() {
        let sub = ClientFrame::Subscribe {
            channel: "c".into(),
            since: Some(Since {
                offset: 41,
                epoch: "e".into(),
            }),
            id: Some("r1".into()),
        };
        assert_eq!(
            sub.encode(),
            r#"{"op":"subscribe","channel":"c","since":{"offset":41,"epoch":"e"},"id":"r1"}"#
        );
        let bare = ClientFrame::Subscribe {
            channel: "c".into(),
            since: None,
            id: None,
        };
        assert_eq!(bare.encode(), r#"{"op":"subscribe","channel":"c"}"#);
        let unsub = ClientFrame::Unsubscribe {
            channel: "c".into(),
            id: Some("r2".into()),
        };
        assert_eq!(
            unsub.encode(),
            r#"{"op":"unsubscribe","channel":"c","id":"r2"}"#
        );
        let publish = ClientFrame::Publish {
            channel: "c".into(),
            data: json!({"k": [1]}),
            idempotency_key: None,
            id: None,
        };
        assert_eq!(
            publish.encode(),
            r#"{"op":"publish","channel":"c","data":{"k":[1]}}"#
        );
        let send = ClientFrame::Send {
            to: "u1".into(),
            data: json!(null),
            id: Some("r3".into()),
        };
        assert_eq!(
            send.encode(),
            r#"{"op":"send","to":"u1","data":null,"id":"r3"}"#
        );
        let refresh = ClientFrame::Refresh {
            token: "t.k.n".into(),
            id: Some("r4".into()),
        };
        assert_eq!(
            refresh.encode(),
            r#"{"op":"refresh","token":"t.k.n","id":"r4"}"#
        );
    }

    #[test]
    fn decodes_every_server_frame() {
        let cases = [
            (
                r#"{"op":"welcome","client_id":"u1","node":"n1","heartbeat_ms":30000}"#,
                ServerFrame::Welcome {
                    client_id: "u1".into(),
                    node: "n1".into(),
                    heartbeat_ms: 30000,
                    expires_at_ms: None,
                },
            ),
            (
                r#"{"op":"welcome","client_id":"u1","node":"n1","heartbeat_ms":1,"expires_at_ms":1796000000000}"#,
                ServerFrame::Welcome {
                    client_id: "u1".into(),
                    node: "n1".into(),
                    heartbeat_ms: 1,
                    expires_at_ms: Some(1_796_000_000_000),
                },
            ),
            (
                r#"{"op":"ack","id":"r1","offset":3,"epoch":"e","recovered":false}"#,
                ServerFrame::Ack {
                    id: Some("r1".into()),
                    offset: Some(3),
                    epoch: Some("e".into()),
                    recovered: Some(false),
                    expires_at_ms: None,
                    duplicate: None,
                },
            ),
            (
                r#"{"op":"ack","id":"r2"}"#,
                ServerFrame::Ack {
                    id: Some("r2".into()),
                    offset: None,
                    epoch: None,
                    recovered: None,
                    expires_at_ms: None,
                    duplicate: None,
                },
            ),
            (
                r#"{"op":"ack","id":"r7","expires_at_ms":1796000000000}"#,
                ServerFrame::Ack {
                    id: Some("r7".into()),
                    offset: None,
                    epoch: None,
                    recovered: None,
                    expires_at_ms: Some(1_796_000_000_000),
                    duplicate: None,
                },
            ),
            (
                r#"{"op":"error","code":"forbidden","message":"no","id":"r3"}"#,
                ServerFrame::Error {
                    code: "forbidden".into(),
                    message: "no".into(),
                    id: Some("r3".into()),
                },
            ),
            (
                r#"{"op":"message","channel":"c","offset":42,"data":{"x":1},"extra":true}"#,
                ServerFrame::Message {
                    channel: "c".into(),
                    offset: 42,
                    data: json!({"x": 1}),
                },
            ),
            (
                r#"{"op":"direct","from":"u2","data":"hi"}"#,
                ServerFrame::Direct {
                    from: "u2".into(),
                    data: json!("hi"),
                },
            ),
            (
                r#"{"op":"reconnect","after_ms":1234,"reason":"drain"}"#,
                ServerFrame::Reconnect {
                    after_ms: 1234,
                    reason: "drain".into(),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(ServerFrame::decode(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn rejects_malformed_server_frames() {
        for text in [
            "not json",
            "[1]",
            r#"{"op":"dance"}"#,
            r#"{"channel":"c"}"#,
            r#"{"op":"message","channel":"c","offset":-1}"#,
            r#"{"op":"reconnect"}"#,
        ] {
            assert!(
                ServerFrame::decode(text).is_err(),
                "{text} should be refused"
            );
        }
    }

    #[test]
    fn channel_names() {
        assert!(valid_channel("a:b.c_d-e/f9"));
        assert!(valid_channel(&"x".repeat(200)));
        assert!(!valid_channel(""));
        assert!(!valid_channel(&"x".repeat(201)));
        assert!(!valid_channel("bad name"));
        assert!(!valid_channel("é"));
    }
}
