//! A connection that sends requests and waits for their acks, shared by the publishers that
//! speak over a WebSocket (wsfleet, Socket.IO). Writes go out in order through a writer task;
//! a reader task resolves acks by request id and sends what the protocol asks for in return
//! (Socket.IO's pongs). When the connection goes, every request still waiting fails.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::dial::Conn;

/// How long a request waits for its ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What one text frame from the server means to the connection.
pub enum Inbound<K> {
    /// The answer to request `K`: positive or not.
    Ack(K, bool),
    /// Something to send back at once.
    Reply(String),
    /// Nothing the connection acts on.
    Other,
}

type Pending<K> = Arc<Mutex<HashMap<K, oneshot::Sender<bool>>>>;

pub struct Acked<K> {
    writer: mpsc::UnboundedSender<String>,
    pending: Pending<K>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl<K: Eq + Hash + Send + 'static> Acked<K> {
    /// Takes over `ws`; `classify` reads the server's text frames in the protocol's terms.
    pub fn new(ws: Conn, classify: fn(&str) -> Inbound<K>) -> Acked<K> {
        let (mut sink, mut stream) = ws.split();
        let (writer, mut outgoing) = mpsc::unbounded_channel::<String>();
        let pending: Pending<K> = Arc::new(Mutex::new(HashMap::new()));
        let write = tokio::spawn(async move {
            while let Some(text) = outgoing.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        });
        let (acks, replies) = (pending.clone(), writer.clone());
        let read = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                match classify(text.as_str()) {
                    Inbound::Ack(id, ok) => {
                        if let Some(waiter) = lock(&acks).remove(&id) {
                            let _ = waiter.send(ok);
                        }
                    }
                    Inbound::Reply(text) => {
                        let _ = replies.send(text);
                    }
                    Inbound::Other => {}
                }
            }
            lock(&acks).clear();
        });
        Acked {
            writer,
            pending,
            tasks: [write, read],
        }
    }

    /// Sends `text`, the request `id`; resolves to whether a positive ack came in time.
    pub fn request(&self, id: K, text: String) -> impl Future<Output = bool> + use<K> {
        let (acked, ack) = oneshot::channel();
        lock(&self.pending).insert(id, acked);
        let sent = self.writer.send(text).is_ok();
        async move { sent && matches!(tokio::time::timeout(ACK_TIMEOUT, ack).await, Ok(Ok(true))) }
    }
}

impl<K> Drop for Acked<K> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The pending-ack map; a poisoned lock (a panicked task) still holds valid entries.
fn lock<K>(pending: &Pending<K>) -> MutexGuard<'_, HashMap<K, oneshot::Sender<bool>>> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
