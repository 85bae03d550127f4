//! The client protocol: JSON text frames with an `op` field. Owns parsing of client frames
//! (with errors that map to an `error` reply, never a panic), channel-name validation, and the
//! encoding of every server → client frame. docs/protocol.md is the written spec.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

pub use wsfleet_api::ErrorCode;
pub use wsfleet_api::names::{MAX_CHANNEL_LEN, MAX_CLIENT_ID_LEN, MAX_REQUEST_ID_LEN};

/// Where a subscriber wants to resume a channel's history from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// A frame sent by a client, after validation.
#[derive(Debug)]
pub enum ClientMessage {
    Subscribe {
        channel: String,
        since: Option<Since>,
        id: Option<String>,
    },
    Unsubscribe {
        channel: String,
        id: Option<String>,
    },
    Publish {
        channel: String,
        /// Kept as raw JSON text so it is forwarded byte for byte, never re-encoded.
        data: Box<RawValue>,
        /// At most once per key and channel within the idempotency window.
        idempotency_key: Option<String>,
        id: Option<String>,
    },
    Send {
        to: String,
        data: Box<RawValue>,
        id: Option<String>,
    },
    /// A fresh token for this connection, before the current one expires.
    Refresh {
        token: String,
        id: Option<String>,
    },
}

/// Every field any op may carry. serde's tagged enums buffer their content, which `RawValue`
/// does not support, so frames are read into this flat shape and checked per op. Unknown
/// fields are ignored so that newer clients keep working.
#[derive(Deserialize)]
struct Frame {
    op: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    since: Option<Since>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `data: null` is a value that is present, unlike a missing `data`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

impl ClientMessage {
    /// The request id the client asked to be echoed in the reply, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientMessage::Subscribe { id, .. }
            | ClientMessage::Unsubscribe { id, .. }
            | ClientMessage::Publish { id, .. }
            | ClientMessage::Send { id, .. }
            | ClientMessage::Refresh { id, .. } => id.as_deref(),
        }
    }
}

/// Why a client frame or request was refused; becomes an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// The request id, when it could be read from the frame.
    pub id: Option<String>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
            id: None,
        }
    }

    pub fn with_id(mut self, id: Option<&str>) -> Self {
        self.id = id.map(str::to_owned);
        self
    }

    /// The `error` frame for this refusal.
    pub fn to_frame(&self) -> String {
        encode(&ServerMessage::Error {
            code: &self.code,
            message: &self.message,
            id: self.id.as_deref(),
        })
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// Parses and validates one client text frame.
pub fn parse_client(text: &str, max_bytes: usize) -> Result<ClientMessage, ProtocolError> {
    if text.len() > max_bytes {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!("frame is {} bytes, the limit is {max_bytes}", text.len()),
        ));
    }
    let frame: Frame = serde_json::from_str(text).map_err(|err| {
        ProtocolError::new(ErrorCode::BadRequest, format!("invalid frame: {err}"))
    })?;
    let id = match frame.id {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) if id.len() <= MAX_REQUEST_ID_LEN => Some(id),
        Some(_) => {
            return Err(ProtocolError::new(
                ErrorCode::BadRequest,
                format!("`id` must be a string of at most {MAX_REQUEST_ID_LEN} bytes"),
            ));
        }
    };
    let fail = |code, message: &str| Err(ProtocolError::new(code, message).with_id(id.as_deref()));
    let Some(op) = frame.op else {
        return fail(ErrorCode::BadRequest, "missing field `op`");
    };
    let message = match op.as_str() {
        "subscribe" | "unsubscribe" | "publish" => {
            let Some(channel) = frame.channel else {
                return fail(ErrorCode::BadRequest, "missing field `channel`");
            };
            match op.as_str() {
                "subscribe" => ClientMessage::Subscribe {
                    channel,
                    since: frame.since,
                    id,
                },
                "unsubscribe" => ClientMessage::Unsubscribe { channel, id },
                _ => {
                    let Some(data) = frame.data else {
                        return fail(ErrorCode::BadRequest, "missing field `data`");
                    };
                    ClientMessage::Publish {
                        channel,
                        data,
                        idempotency_key: frame.idempotency_key,
                        id,
                    }
                }
            }
        }
        "send" => {
            let (Some(to), Some(data)) = (frame.to, frame.data) else {
                return fail(ErrorCode::BadRequest, "`send` needs fields `to` and `data`");
            };
            ClientMessage::Send { to, data, id }
        }
        "refresh" => {
            let Some(token) = frame.token.filter(|t| !t.is_empty()) else {
                return fail(ErrorCode::BadRequest, "`refresh` needs field `token`");
            };
            ClientMessage::Refresh { token, id }
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return fail(ErrorCode::UnknownOp, &format!("unknown op `{shown}`"));
        }
    };
    validate(&message).map_err(|e| e.with_id(message.request_id()))?;
    Ok(message)
}

fn validate(message: &ClientMessage) -> Result<(), ProtocolError> {
    match message {
        ClientMessage::Publish {
            channel,
            idempotency_key,
            ..
        } => {
            validate_channel(channel)?;
            idempotency_key
                .as_deref()
                .map_or(Ok(()), validate_idempotency_key)
        }
        ClientMessage::Subscribe { channel, .. } | ClientMessage::Unsubscribe { channel, .. } => {
            validate_channel(channel)
        }
        ClientMessage::Send { to, .. } => validate_client_id(to),
        ClientMessage::Refresh { .. } => Ok(()),
    }
}

/// Channel names are 1..=200 characters of `[A-Za-z0-9:._\-/]` (the contract's rule).
pub fn validate_channel(channel: &str) -> Result<(), ProtocolError> {
    wsfleet_api::names::check_channel(channel)
        .map_err(|message| ProtocolError::new(ErrorCode::BadRequest, message))
}

/// Idempotency keys are 1..=128 bytes without control characters (the contract's rule).
pub fn validate_idempotency_key(key: &str) -> Result<(), ProtocolError> {
    wsfleet_api::names::check_idempotency_key(key)
        .map_err(|message| ProtocolError::new(ErrorCode::BadRequest, message))
}

/// Client ids are non-empty, bounded, and free of control characters (the contract's rule).
pub fn validate_client_id(id: &str) -> Result<(), ProtocolError> {
    wsfleet_api::names::check_client_id(id)
        .map_err(|message| ProtocolError::new(ErrorCode::BadRequest, message))
}

/// A frame sent by the server. Borrowed fields: frames are encoded straight from the data
/// they describe.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ServerMessage<'a> {
    Welcome {
        client_id: &'a str,
        node: &'a str,
        heartbeat_ms: u64,
        /// When the connection's token expires (ms since the Unix epoch): refresh before it.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at_ms: Option<u64>,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// The new expiry, in the ack of a `refresh`.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at_ms: Option<u64>,
        /// `true` in the ack of a publish whose idempotency key had already published.
        #[serde(skip_serializing_if = "Option::is_none")]
        duplicate: Option<bool>,
    },
    Error {
        code: &'a ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    Message {
        channel: &'a str,
        offset: u64,
        data: &'a RawValue,
    },
    Direct {
        from: &'a str,
        data: &'a RawValue,
    },
    Reconnect {
        after_ms: u64,
        reason: &'a str,
    },
}

/// Encodes a server frame. Serializing these types cannot fail (string keys, no maps with
/// non-string keys, raw values that were already validated JSON).
pub fn encode(message: &ServerMessage<'_>) -> String {
    serde_json::to_string(message).unwrap_or_else(|err| {
        tracing::error!(%err, "encoding a server frame failed");
        r#"{"op":"error","code":"internal","message":"encoding failed"}"#.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
        parse_client(text, 65536)
    }

    #[test]
    fn parses_every_client_op() {
        let sub = parse(
            r#"{"op":"subscribe","channel":"news","since":{"offset":41,"epoch":"e"},"id":"r1"}"#,
        )
        .unwrap();
        match sub {
            ClientMessage::Subscribe { channel, since, id } => {
                assert_eq!(channel, "news");
                assert_eq!(
                    since,
                    Some(Since {
                        offset: 41,
                        epoch: "e".into()
                    })
                );
                assert_eq!(id.as_deref(), Some("r1"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(r#"{"op":"unsubscribe","channel":"a"}"#),
            Ok(ClientMessage::Unsubscribe { .. })
        ));
        match parse(r#"{"op":"publish","channel":"a/b","data":{"x":[1, 2]}}"#).unwrap() {
            ClientMessage::Publish { data, .. } => assert_eq!(data.get(), r#"{"x":[1, 2]}"#),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(r#"{"op":"send","to":"u1","data":"hi","id":"7"}"#),
            Ok(ClientMessage::Send { .. })
        ));
    }

    #[test]
    fn classifies_bad_input() {
        let e = parse("not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse(r#"{"op":"dance","id":"r9"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::UnknownOp, Some("r9"))
        );
        let e = parse(r#"{"op":"publish","channel":"a","id":"r2"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::BadRequest, Some("r2"))
        );
        assert!(e.message.contains("data"), "{}", e.message);
        let e = parse(r#"{"channel":"a"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse(r#"[1,2]"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse(r#"{"op":"subscribe","channel":"bad name","id":"r3"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::BadRequest, Some("r3"))
        );
        let e = parse_client(r#"{"op":"subscribe","channel":"abc"}"#, 10).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
    }

    #[test]
    fn channel_names() {
        assert!(validate_channel("a:b.c_d-e/f9").is_ok());
        assert!(validate_channel("").is_err());
        assert!(validate_channel(&"x".repeat(200)).is_ok());
        assert!(validate_channel(&"x".repeat(201)).is_err());
        assert!(validate_channel("é").is_err());
        assert!(validate_channel("a*").is_err());
    }

    #[test]
    fn encodes_server_frames() {
        let data = RawValue::from_string("{\"k\":1}".into()).unwrap();
        let frame = encode(&ServerMessage::Message {
            channel: "c",
            offset: 42,
            data: &data,
        });
        assert_eq!(
            frame,
            r#"{"op":"message","channel":"c","offset":42,"data":{"k":1}}"#
        );
        let ack = encode(&ServerMessage::Ack {
            id: Some("r1"),
            offset: Some(3),
            epoch: Some("e"),
            recovered: None,
            expires_at_ms: None,
            duplicate: None,
        });
        assert_eq!(ack, r#"{"op":"ack","id":"r1","offset":3,"epoch":"e"}"#);
        let err = ProtocolError::new(ErrorCode::NotFound, "no such client")
            .with_id(Some("x"))
            .to_frame();
        assert_eq!(
            err,
            r#"{"op":"error","code":"not_found","message":"no such client","id":"x"}"#
        );
    }
}
