//! The Socket.IO 4 peer (bench/peers/socketio/server.js) spoken over a raw WebSocket: the
//! namespace connect that makes a connection usable, joining a room with an ack, and a
//! publisher that pipelines `publish` events and matches their acks by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::engineio::{self, Kind, Packet, SocketPacket};
use crate::dial::Conn;

/// Longest wait for one publish's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The next Engine.IO packet, answering pings on the way. `Err` when the connection ends or
/// sends something that is not Engine.IO.
async fn next_packet(ws: &mut Conn) -> Result<Packet, &'static str> {
    // Bounded by the caller's timeout; a well-behaved server sends a handful of frames here.
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err("socketio_closed"),
            Some(Ok(_)) => continue,
        };
        match engineio::decode(text.as_str()) {
            Ok(Packet::Ping) => {
                if ws.send(Message::text(engineio::PONG)).await.is_err() {
                    return Err("socketio_closed");
                }
            }
            Ok(packet) => return Ok(packet),
            Err(_) => return Err("socketio_bad_frame"),
        }
    }
}

/// Turns an open WebSocket into a Socket.IO connection on the default namespace: waits for
/// Engine.IO's open packet, sends CONNECT, waits for the server's CONNECT. The caller bounds it
/// in time.
pub async fn connect(ws: &mut Conn) -> Result<(), &'static str> {
    match next_packet(ws).await? {
        Packet::Open(_) => {}
        _ => return Err("socketio_no_open"),
    }
    ws.send(Message::text(engineio::CONNECT))
        .await
        .map_err(|_| "socketio_closed")?;
    loop {
        match next_packet(ws).await? {
            Packet::Message(SocketPacket {
                kind: Kind::Connect,
                ..
            }) => return Ok(()),
            Packet::Message(SocketPacket {
                kind: Kind::ConnectError,
                ..
            }) => return Err("socketio_connect_error"),
            Packet::Close => return Err("socketio_closed"),
            _ => {}
        }
    }
}

/// Joins `room` through the server's `subscribe` event and waits for its ack.
pub async fn subscribe(ws: &mut Conn, room: &str) -> Result<()> {
    const ID: u64 = 1;
    ws.send(Message::text(engineio::event(
        "subscribe",
        &json!(room),
        Some(ID),
    )))
    .await
    .context("sending subscribe")?;
    loop {
        let packet = next_packet(ws).await.map_err(anyhow::Error::msg)?;
        if let Packet::Message(p) = packet
            && p.kind == Kind::Ack
            && p.id == Some(ID)
        {
            if p.ack_ok() {
                return Ok(());
            }
            bail!("the server refused the subscribe: {:?}", p.data);
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<bool>>>>;

/// One Socket.IO connection that publishes: writes go out in order through a writer task;
/// a reader task answers pings and resolves acks.
pub struct Publisher {
    writer: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: AtomicU64,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Publisher {
    /// Takes a connection that [`connect`] has already made usable.
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
        let (acks, pongs) = (pending.clone(), writer.clone());
        let read = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                match engineio::decode(text.as_str()) {
                    Ok(Packet::Ping) => {
                        let _ = pongs.send(engineio::PONG.to_owned());
                    }
                    Ok(Packet::Message(p)) if p.kind == Kind::Ack => {
                        let waiter = p.id.and_then(|id| lock(&acks).remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(p.ack_ok());
                        }
                    }
                    _ => {}
                }
            }
            // The connection is gone: every publish still waiting fails now.
            lock(&acks).clear();
        });
        Publisher {
            writer,
            pending,
            next_id: AtomicU64::new(1),
            tasks: [write, read],
        }
    }

    /// Emits `publish {room, data}`; resolves to whether the server acknowledged it in time.
    pub fn publish(&self, room: &str, data: Value) -> impl Future<Output = bool> + use<> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (acked, ack) = oneshot::channel();
        lock(&self.pending).insert(id, acked);
        let text = engineio::event("publish", &json!({ "room": room, "data": data }), Some(id));
        let sent = self.writer.send(text).is_ok();
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

/// The pending-ack map; a poisoned lock (a panicked task) still holds valid entries.
fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<bool>>> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
