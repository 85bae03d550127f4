//! Checks the Rust client's frames against `docs/protocol-examples.json`, the examples the
//! JavaScript client's tests read too, so both clients agree with one source of truth.

use serde_json::Value;
use wsfleet_client::protocol::{ClientFrame, ServerFrame, Since};

fn examples() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol-examples.json"
    );
    let text = std::fs::read_to_string(path).expect("reading docs/protocol-examples.json");
    serde_json::from_str(&text).expect("docs/protocol-examples.json is JSON")
}

fn string(frame: &Value, key: &str) -> String {
    frame[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {frame}"))
        .to_owned()
}

fn id(frame: &Value) -> Option<String> {
    frame["id"].as_str().map(str::to_owned)
}

/// Builds the client frame an example describes.
fn client_frame(frame: &Value) -> ClientFrame {
    match frame["op"].as_str() {
        Some("subscribe") => ClientFrame::Subscribe {
            channel: string(frame, "channel"),
            since: frame.get("since").map(|since| Since {
                offset: since["offset"].as_u64().expect("since.offset"),
                epoch: string(since, "epoch"),
            }),
            id: id(frame),
        },
        Some("unsubscribe") => ClientFrame::Unsubscribe {
            channel: string(frame, "channel"),
            id: id(frame),
        },
        Some("publish") => ClientFrame::Publish {
            channel: string(frame, "channel"),
            data: frame["data"].clone(),
            idempotency_key: frame["idempotency_key"].as_str().map(str::to_owned),
            id: id(frame),
        },
        Some("send") => ClientFrame::Send {
            to: string(frame, "to"),
            data: frame["data"].clone(),
            id: id(frame),
        },
        Some("refresh") => ClientFrame::Refresh {
            token: string(frame, "token"),
            id: id(frame),
        },
        other => panic!("no client op {other:?}"),
    }
}

#[test]
fn client_frames_are_encoded_exactly_as_the_shared_examples() {
    let examples = examples();
    let client = examples["client"].as_array().expect("client examples");
    assert!(client.len() >= 5);
    for example in client {
        let frame = client_frame(&example["frame"]);
        assert_eq!(frame.encode(), string(example, "text"));
    }
}

/// The op and the fields of a decoded frame, as JSON, to compare with an example's `expect`.
fn fields(frame: ServerFrame) -> Value {
    use serde_json::json;
    match frame {
        ServerFrame::Welcome {
            client_id,
            node,
            heartbeat_ms,
            expires_at_ms,
        } => {
            json!({"op": "welcome", "client_id": client_id, "node": node, "heartbeat_ms": heartbeat_ms, "expires_at_ms": expires_at_ms})
        }
        ServerFrame::Ack {
            id,
            offset,
            epoch,
            recovered,
            expires_at_ms,
            duplicate,
        } => {
            json!({"op": "ack", "id": id, "offset": offset, "epoch": epoch, "recovered": recovered, "expires_at_ms": expires_at_ms, "duplicate": duplicate})
        }
        ServerFrame::Error { code, message, id } => {
            json!({"op": "error", "code": code, "message": message, "id": id})
        }
        ServerFrame::Message {
            channel,
            offset,
            data,
        } => json!({"op": "message", "channel": channel, "offset": offset, "data": data}),
        ServerFrame::Direct { from, data } => json!({"op": "direct", "from": from, "data": data}),
        ServerFrame::Reconnect { after_ms, reason } => {
            json!({"op": "reconnect", "after_ms": after_ms, "reason": reason})
        }
    }
}

#[test]
fn server_frames_decode_as_the_shared_examples() {
    let examples = examples();
    let server = examples["server"].as_array().expect("server examples");
    for example in server {
        let text = string(example, "text");
        let decoded = ServerFrame::decode(&text);
        if let Some(why) = example["invalid"].as_str() {
            assert!(decoded.is_err(), "accepted {text} ({why})");
            continue;
        }
        let decoded = fields(decoded.unwrap_or_else(|e| panic!("{text}: {e}")));
        let expect = example["expect"].as_object().expect("expect");
        for (key, value) in expect {
            assert_eq!(&decoded[key], value, "{key} of {text}");
        }
        // Fields the example leaves out are absent (`null`), not invented.
        for (key, value) in decoded.as_object().expect("object") {
            if !expect.contains_key(key)
                && key != "heartbeat_ms"
                && key != "message"
                && key != "data"
            {
                assert!(value.is_null(), "{key} of {text} is {value}");
            }
        }
    }
}
