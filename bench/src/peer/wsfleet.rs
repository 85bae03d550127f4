//! wsfleet's client protocol spoken over a raw WebSocket (`--protocol wsfleet-raw`), the way
//! the peers are driven: the same per-delivery cost on the load side for all three systems,
//! where the Rust client (`--protocol wsfleet`) adds its own tasks, channels and bookkeeping.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::acked::{Acked, Inbound};
use crate::dial::Conn;

/// What a server frame is to a subscriber: a channel message's data, an ack or error for a
/// request id, or something else (welcome, reconnect, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    Message(Value),
    Ack(String),
    Error(Option<String>),
    Other,
}

/// Reads one server text frame; `None` when it is not JSON with an `op`.
pub fn read(text: &str) -> Option<ServerFrame> {
    let mut value: Value = serde_json::from_str(text).ok()?;
    let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
    Some(match value.get("op")?.as_str()? {
        "message" => ServerFrame::Message(value.get_mut("data")?.take()),
        "ack" => ServerFrame::Ack(id?),
        "error" => ServerFrame::Error(id),
        _ => ServerFrame::Other,
    })
}

/// Subscribes to `channel` and waits for the ack.
pub async fn subscribe(ws: &mut Conn, channel: &str) -> Result<()> {
    let request = json!({ "op": "subscribe", "channel": channel, "id": "s" });
    ws.send(Message::text(request.to_string()))
        .await
        .context("sending subscribe")?;
    // Bounded by the caller's timeout; the welcome frame comes first.
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("connection failed before the subscribe ack: {e}"),
            None => bail!("connection closed before the subscribe ack"),
        };
        match read(text.as_str()) {
            Some(ServerFrame::Ack(id)) if id == "s" => return Ok(()),
            Some(ServerFrame::Error(Some(id))) if id == "s" => {
                bail!("the gateway refused the subscribe: {text}")
            }
            _ => {}
        }
    }
}

/// One connection that publishes; acks and errors are matched by request id.
pub struct Publisher {
    acked: Acked<String>,
    next_id: AtomicU64,
}

impl Publisher {
    pub fn new(ws: Conn) -> Publisher {
        Publisher {
            acked: Acked::new(ws, classify),
            next_id: AtomicU64::new(1),
        }
    }

    /// Publishes `data` to `channel`; resolves to whether the gateway acknowledged it in time.
    pub fn publish(&self, channel: &str, data: Value) -> impl Future<Output = bool> + use<> {
        let id = format!("p{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let request = json!({ "op": "publish", "channel": channel, "data": data, "id": id });
        self.acked.request(id, request.to_string())
    }
}

/// A publisher's view of a server frame: the answer to one of its requests, or nothing.
fn classify(text: &str) -> Inbound<String> {
    match read(text) {
        Some(ServerFrame::Ack(id)) => Inbound::Ack(id, true),
        Some(ServerFrame::Error(Some(id))) => Inbound::Ack(id, false),
        _ => Inbound::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames() {
        assert_eq!(
            read(r#"{"op":"message","channel":"c","offset":3,"data":{"seq":1,"ts_us":2}}"#),
            Some(ServerFrame::Message(json!({"seq":1,"ts_us":2})))
        );
        assert_eq!(
            read(r#"{"op":"ack","id":"p7","offset":3,"epoch":"e"}"#),
            Some(ServerFrame::Ack("p7".into()))
        );
        assert_eq!(
            read(r#"{"op":"error","code":"forbidden","message":"no","id":"s"}"#),
            Some(ServerFrame::Error(Some("s".into())))
        );
        assert_eq!(
            read(r#"{"op":"welcome","client_id":"a","node":"n","heartbeat_ms":1}"#),
            Some(ServerFrame::Other)
        );
        assert_eq!(read(r#"{"op":"message","channel":"c"}"#), None);
        assert_eq!(read("not json"), None);
        assert_eq!(read(r#"{"no":"op"}"#), None);
    }
}
