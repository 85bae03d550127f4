//! wsfleet's client protocol spoken over a raw WebSocket (`--protocol wsfleet-raw`), the way
//! the peers are driven: the same per-delivery cost on the load side for all three systems,
//! where the Rust client (`--protocol wsfleet`) adds its own tasks, channels and bookkeeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::dial::Conn;

/// Longest wait for one publish's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

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

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<bool>>>>;

/// One connection that publishes: writes go out in order through a writer task; a reader task
/// resolves acks and errors by request id.
pub struct Publisher {
    writer: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: AtomicU64,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Publisher {
    pub fn new(ws: Conn) -> Publisher {
        let (mut sink, mut stream) = ws.split();
        let (writer, mut outgoing) = mpsc::unbounded_channel::<String>();
        let pending: Pending = Arc::default();
        let write = tokio::spawn(async move {
            while let Some(text) = outgoing.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        });
        let acks = pending.clone();
        let read_task = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let (id, ok) = match read(text.as_str()) {
                    Some(ServerFrame::Ack(id)) => (id, true),
                    Some(ServerFrame::Error(Some(id))) => (id, false),
                    _ => continue,
                };
                if let Some(waiter) = lock(&acks).remove(&id) {
                    let _ = waiter.send(ok);
                }
            }
            lock(&acks).clear();
        });
        Publisher {
            writer,
            pending,
            next_id: AtomicU64::new(1),
            tasks: [write, read_task],
        }
    }

    /// Publishes `data` to `channel`; resolves to whether the gateway acknowledged it in time.
    pub fn publish(&self, channel: &str, data: Value) -> impl Future<Output = bool> + use<> {
        let id = format!("p{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (acked, ack) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), acked);
        let request = json!({ "op": "publish", "channel": channel, "data": data, "id": id });
        let sent = self.writer.send(request.to_string()).is_ok();
        async move { sent && matches!(tokio::time::timeout(ACK_TIMEOUT, ack).await, Ok(Ok(true))) }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<bool>>> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
