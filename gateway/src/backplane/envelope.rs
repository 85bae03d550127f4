//! Wire formats of what the backplane publishes on Redis topics. Channel messages are written by
//! the publish script (`{"offset":N,"epoch":"E","data":<json>}`); node-channel messages are
//! direct sends (`{"type":"direct","to":..,"from":..,"data":<json>}`) and liveness probes
//! (`{"type":"probe","token":..}`). `data` is carried as raw JSON and never re-encoded.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A channel message as received on a live topic.
#[derive(Debug, PartialEq)]
pub(crate) struct LiveMessage {
    pub offset: u64,
    pub epoch: String,
    pub data: Bytes,
}

/// A message received on a node channel.
#[derive(Debug, PartialEq)]
pub(crate) enum NodeMessage {
    Direct {
        to: String,
        from: String,
        data: Bytes,
    },
    Probe {
        token: String,
    },
}

#[derive(Deserialize)]
struct LiveWire<'a> {
    offset: u64,
    epoch: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Serialize, Deserialize)]
struct NodeWire<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

pub(crate) fn decode_live(payload: Bytes) -> Result<LiveMessage, String> {
    let wire: LiveWire<'_> = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
    Ok(LiveMessage {
        offset: wire.offset,
        epoch: wire.epoch,
        // `data` borrows from `payload`, so this shares the buffer instead of copying.
        data: payload.slice_ref(wire.data.get().as_bytes()),
    })
}

pub(crate) fn decode_node(payload: Bytes) -> Result<NodeMessage, String> {
    let wire: NodeWire<'_> = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
    match wire.kind {
        "direct" => match (wire.to, wire.from, wire.data) {
            (Some(to), Some(from), Some(data)) => Ok(NodeMessage::Direct {
                to: to.to_string(),
                from: from.to_string(),
                data: payload.slice_ref(data.get().as_bytes()),
            }),
            _ => Err("direct message lacks to, from or data".into()),
        },
        "probe" => match wire.token {
            Some(token) => Ok(NodeMessage::Probe {
                token: token.to_string(),
            }),
            None => Err("probe lacks a token".into()),
        },
        other => Err(format!("unknown node message type {other:?}")),
    }
}

pub(crate) fn encode_direct(to: &str, from: &str, data: &RawValue) -> String {
    encode_node(NodeWire {
        kind: "direct",
        to: Some(to),
        from: Some(from),
        data: Some(data),
        token: None,
    })
}

pub(crate) fn encode_probe(token: &str) -> String {
    encode_node(NodeWire {
        kind: "probe",
        to: None,
        from: None,
        data: None,
        token: Some(token),
    })
}

fn encode_node(wire: NodeWire<'_>) -> String {
    // Serializing borrowed strings and already-valid raw JSON cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    #[test]
    fn live_message_keeps_data_verbatim() {
        let payload = Bytes::from_static(br#"{"offset":42,"epoch":"e1","data":{"a": [1, 2]}}"#);
        let message = decode_live(payload).unwrap();
        assert_eq!(message.offset, 42);
        assert_eq!(message.epoch, "e1");
        assert_eq!(&message.data[..], br#"{"a": [1, 2]}"#);
    }

    #[test]
    fn direct_round_trips() {
        let data = raw(r#"{"x":"y"}"#);
        let encoded = encode_direct("c2", "c1", &data);
        let decoded = decode_node(Bytes::from(encoded)).unwrap();
        assert_eq!(
            decoded,
            NodeMessage::Direct {
                to: "c2".into(),
                from: "c1".into(),
                data: Bytes::from_static(br#"{"x":"y"}"#),
            }
        );
    }

    #[test]
    fn probe_round_trips() {
        let decoded = decode_node(Bytes::from(encode_probe("t7"))).unwrap();
        assert_eq!(decoded, NodeMessage::Probe { token: "t7".into() });
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(decode_live(Bytes::from_static(b"not json")).is_err());
        assert!(decode_live(Bytes::from_static(br#"{"offset":-1,"epoch":"e","data":1}"#)).is_err());
        assert!(decode_node(Bytes::from_static(br#"{"type":"direct","to":"a"}"#)).is_err());
        assert!(decode_node(Bytes::from_static(br#"{"type":"bogus"}"#)).is_err());
    }
}
