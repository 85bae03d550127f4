//! Engine.IO v4 and Socket.IO v5 framing over a raw WebSocket, as far as the Socket.IO peer
//! needs it: the text packets of the default namespace without binary attachments. Pure
//! functions only, so the framing is tested without a server.
//!
//! A WebSocket text frame carries one Engine.IO packet: a type digit (`0` open, `1` close, `2`
//! ping, `3` pong, `4` message, `5` upgrade, `6` noop) and its payload. A message carries one
//! Socket.IO packet: `<type>[<namespace>,][<ack id>][<json>]`, e.g. `2["message",{..}]` (event),
//! `213["publish",{..}]` (event asking for ack 13), `313[{..}]` (the ack).

use serde_json::Value;

/// The path a Socket.IO 4 server answers WebSocket-only clients on.
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// Client → server: connect to the default namespace.
pub const CONNECT: &str = "40";
/// Client → server: the answer to a server ping (`2`).
pub const PONG: &str = "3";

/// The WebSocket URL of a Socket.IO node whose base URL is `ws://host:port`.
pub fn websocket_url(base: &str) -> String {
    format!("{}{PATH}", base.trim_end_matches('/'))
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// The handshake data the server opens with (`sid`, `pingInterval`, `maxPayload`, ...).
    Open(Value),
    Close,
    Ping,
    Pong,
    Message(SocketPacket),
    Upgrade,
    Noop,
}

/// What a Socket.IO packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
}

/// One Socket.IO packet (inside an Engine.IO message).
#[derive(Debug, Clone, PartialEq)]
pub struct SocketPacket {
    pub kind: Kind,
    /// `/` for the default namespace.
    pub namespace: String,
    pub id: Option<u64>,
    pub data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Empty,
    UnknownType(char),
    /// Binary events and acks carry attachments in separate frames; the bench never sends any.
    Binary,
    UnterminatedNamespace,
    BadId,
    BadJson(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Empty => write!(f, "empty Engine.IO packet"),
            FrameError::UnknownType(c) => write!(f, "unknown packet type {c:?}"),
            FrameError::Binary => write!(f, "binary Socket.IO packets are not supported"),
            FrameError::UnterminatedNamespace => write!(f, "namespace without a closing comma"),
            FrameError::BadId => write!(f, "ack id out of range"),
            FrameError::BadJson(e) => write!(f, "bad JSON payload: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Decodes one WebSocket text frame.
pub fn decode(text: &str) -> Result<Packet, FrameError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(FrameError::Empty)?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => Packet::Open(json(rest)?.unwrap_or(Value::Null)),
        '1' => Packet::Close,
        '2' => Packet::Ping,
        '3' => Packet::Pong,
        '4' => Packet::Message(decode_socket(rest)?),
        '5' => Packet::Upgrade,
        '6' => Packet::Noop,
        other => return Err(FrameError::UnknownType(other)),
    })
}

fn decode_socket(text: &str) -> Result<SocketPacket, FrameError> {
    let mut chars = text.chars();
    let kind = match chars.next().ok_or(FrameError::Empty)? {
        '0' => Kind::Connect,
        '1' => Kind::Disconnect,
        '2' => Kind::Event,
        '3' => Kind::Ack,
        '4' => Kind::ConnectError,
        '5' | '6' => return Err(FrameError::Binary),
        other => return Err(FrameError::UnknownType(other)),
    };
    let mut rest = chars.as_str();
    let mut namespace = "/".to_owned();
    if rest.starts_with('/') {
        let (ns, after) = rest
            .split_once(',')
            .ok_or(FrameError::UnterminatedNamespace)?;
        namespace = ns.to_owned();
        rest = after;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = match digits {
        0 => None,
        _ => Some(rest[..digits].parse().map_err(|_| FrameError::BadId)?),
    };
    Ok(SocketPacket {
        kind,
        namespace,
        id,
        data: json(&rest[digits..])?,
    })
}

fn json(text: &str) -> Result<Option<Value>, FrameError> {
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| FrameError::BadJson(e.to_string()))
}

/// Encodes an event `[name, payload]` on the default namespace, asking for an ack when `id`
/// is given: `42["name",payload]` or `42<id>["name",payload]`.
pub fn event(name: &str, payload: &Value, id: Option<u64>) -> String {
    let args = Value::Array(vec![Value::String(name.to_owned()), payload.clone()]);
    match id {
        Some(id) => format!("42{id}{args}"),
        None => format!("42{args}"),
    }
}

impl SocketPacket {
    /// The payload of an event named `name` (its first argument).
    pub fn event_payload(&self, name: &str) -> Option<&Value> {
        if self.kind != Kind::Event {
            return None;
        }
        match self.data.as_ref()?.as_array()?.as_slice() {
            [Value::String(n), payload, ..] if n == name => Some(payload),
            _ => None,
        }
    }

    /// True for an ack whose first argument is `{"ok": true}` (what the bench server sends).
    pub fn ack_ok(&self) -> bool {
        self.kind == Kind::Ack
            && self
                .data
                .as_ref()
                .and_then(|d| d.get(0))
                .and_then(|first| first.get("ok"))
                .and_then(Value::as_bool)
                == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn open_ping_and_close() {
        let open = decode(r#"0{"sid":"abc","upgrades":[],"pingInterval":25000}"#).unwrap();
        assert_eq!(
            open,
            Packet::Open(json!({"sid":"abc","upgrades":[],"pingInterval":25000}))
        );
        assert_eq!(decode("2").unwrap(), Packet::Ping);
        assert_eq!(decode("3").unwrap(), Packet::Pong);
        assert_eq!(decode("1").unwrap(), Packet::Close);
        assert_eq!(decode("6").unwrap(), Packet::Noop);
        assert_eq!(decode(""), Err(FrameError::Empty));
        assert_eq!(decode("9"), Err(FrameError::UnknownType('9')));
    }

    #[test]
    fn connect_and_connect_error() {
        let Packet::Message(p) = decode(r#"40{"sid":"x1"}"#).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(p.kind, Kind::Connect);
        assert_eq!(p.namespace, "/");
        assert_eq!(p.data, Some(json!({"sid":"x1"})));
        let Packet::Message(p) = decode(r#"44/admin,{"message":"no"}"#).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(p.kind, Kind::ConnectError);
        assert_eq!(p.namespace, "/admin");
        assert_eq!(decode("44/admin"), Err(FrameError::UnterminatedNamespace));
    }

    #[test]
    fn events_with_and_without_ack_ids() {
        let Packet::Message(p) = decode(r#"42["message",{"seq":3,"ts_us":7}]"#).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(p.id, None);
        assert_eq!(
            p.event_payload("message"),
            Some(&json!({"seq":3,"ts_us":7}))
        );
        assert_eq!(p.event_payload("other"), None);
        let Packet::Message(p) = decode(r#"4217["publish",1]"#).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(p.id, Some(17));
        assert!(matches!(
            decode(r#"42["x",{]"#),
            Err(FrameError::BadJson(_))
        ));
        assert_eq!(decode(r#"451-["x",{}]"#), Err(FrameError::Binary));
        assert_eq!(decode("4299999999999999999999[]"), Err(FrameError::BadId));
    }

    #[test]
    fn acks() {
        let Packet::Message(p) = decode(r#"4312[{"ok":true}]"#).unwrap() else {
            panic!("not a message")
        };
        assert_eq!((p.kind, p.id), (Kind::Ack, Some(12)));
        assert!(p.ack_ok());
        let Packet::Message(p) = decode(r#"4312[{"ok":false,"error":"x"}]"#).unwrap() else {
            panic!("not a message")
        };
        assert!(!p.ack_ok());
    }

    #[test]
    fn encoding_round_trips() {
        let payload = json!({"room":"bench","data":{"seq":1,"ts_us":2}});
        let text = event("publish", &payload, Some(5));
        assert_eq!(
            text,
            r#"425["publish",{"data":{"seq":1,"ts_us":2},"room":"bench"}]"#
        );
        let Packet::Message(p) = decode(&text).unwrap() else {
            panic!("not a message")
        };
        assert_eq!((p.kind, p.id), (Kind::Event, Some(5)));
        assert_eq!(p.event_payload("publish"), Some(&payload));
        assert_eq!(
            event("subscribe", &json!("c"), None),
            r#"42["subscribe","c"]"#
        );
    }

    #[test]
    fn websocket_urls() {
        assert_eq!(
            websocket_url("ws://127.0.0.1:3001/"),
            "ws://127.0.0.1:3001/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("ws://127.0.0.1:3001"),
            websocket_url("ws://127.0.0.1:3001/")
        );
    }
}
