//! `docs/protocol-examples.json` from the gateway's side. Both clients are tested against the
//! same file (`clients/rust/tests/protocol_examples.rs`, `clients/js/test/unit.test.js`), so
//! the three agree on one text: every client frame there parses here to what it says, and
//! every valid server frame there is byte for byte what this gateway's encoder writes.

use std::path::Path;

use serde_json::Value;
use serde_json::value::RawValue;
use wsfleet_gateway::protocol::{ClientMessage, ErrorCode, ServerMessage, encode, parse_client};

fn examples() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol-examples.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("examples")).expect("JSON")
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).expect("raw JSON")
}

/// The fields of a parsed client frame, as the examples write them.
fn fields(message: &ClientMessage) -> Value {
    let data = |d: &RawValue| serde_json::from_str::<Value>(d.get()).expect("data");
    let mut fields = match message {
        ClientMessage::Subscribe { channel, since, id } => {
            let mut f = serde_json::json!({"op": "subscribe", "channel": channel, "id": id});
            if let Some(since) = since {
                f["since"] = serde_json::json!({"offset": since.offset, "epoch": since.epoch});
            }
            f
        }
        ClientMessage::Unsubscribe { channel, id } => {
            serde_json::json!({"op": "unsubscribe", "channel": channel, "id": id})
        }
        ClientMessage::Publish {
            channel,
            data: d,
            idempotency_key,
            id,
        } => {
            let mut f =
                serde_json::json!({"op": "publish", "channel": channel, "data": data(d), "id": id});
            if let Some(key) = idempotency_key {
                f["idempotency_key"] = serde_json::json!(key);
            }
            f
        }
        ClientMessage::Send { to, data: d, id } => {
            serde_json::json!({"op": "send", "to": to, "data": data(d), "id": id})
        }
        ClientMessage::Refresh { token, id } => {
            serde_json::json!({"op": "refresh", "token": token, "id": id})
        }
    };
    if fields["id"].is_null() {
        fields.as_object_mut().expect("object").remove("id");
    }
    fields
}

#[test]
fn every_client_example_parses_to_its_fields() {
    let examples = examples();
    let client = examples["client"].as_array().expect("client examples");
    assert!(!client.is_empty());
    for example in client {
        let text = example["text"].as_str().expect("text");
        let message = parse_client(text, 65_536).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(fields(&message), example["frame"], "{text}");
    }
}

#[test]
fn every_valid_server_example_is_what_the_gateway_encodes() {
    let examples = examples();
    let mut encoded = 0;
    for example in examples["server"].as_array().expect("server examples") {
        let (text, expect) = (example["text"].as_str().expect("text"), &example["expect"]);
        // Invalid frames and frames with fields from a future gateway are the clients' tests.
        if expect.is_null() || serde_json::from_str::<Value>(text).ok().as_ref() != Some(expect) {
            continue;
        }
        let s = |key: &str| expect[key].as_str();
        let n = |key: &str| expect[key].as_u64();
        let data = raw(&expect["data"]);
        let code = ErrorCode::parse(s("code").unwrap_or_default());
        let message = match s("op").expect("op") {
            "welcome" => ServerMessage::Welcome {
                client_id: s("client_id").expect("client_id"),
                node: s("node").expect("node"),
                heartbeat_ms: n("heartbeat_ms").expect("heartbeat_ms"),
                expires_at_ms: n("expires_at_ms"),
            },
            "ack" => ServerMessage::Ack {
                id: s("id"),
                offset: n("offset"),
                epoch: s("epoch"),
                recovered: expect["recovered"].as_bool(),
                expires_at_ms: n("expires_at_ms"),
                duplicate: expect["duplicate"].as_bool(),
            },
            "error" => ServerMessage::Error {
                code: &code,
                message: s("message").expect("message"),
                id: s("id"),
            },
            "message" => ServerMessage::Message {
                channel: s("channel").expect("channel"),
                offset: n("offset").expect("offset"),
                data: &data,
            },
            "direct" => ServerMessage::Direct {
                from: s("from").expect("from"),
                data: &data,
            },
            "reconnect" => ServerMessage::Reconnect {
                after_ms: n("after_ms").expect("after_ms"),
                reason: s("reason").expect("reason"),
            },
            other => panic!("an op the gateway does not send: {other}"),
        };
        assert_eq!(encode(&message), text);
        encoded += 1;
    }
    assert!(encoded >= 9, "only {encoded} server examples encoded");
}
