//! The Socket.IO 4 peer (bench/peers/socketio/server.js) spoken over a raw WebSocket: the
//! namespace connect that makes a connection usable, joining a room with an ack, and a
//! publisher that pipelines `publish` events and matches their acks by id.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::acked::{Acked, Inbound};
use super::engineio::{self, Kind, Packet, SocketPacket};
use crate::dial::Conn;

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

/// One Socket.IO connection that publishes; acks are matched by id, pings answered.
pub struct Publisher {
    acked: Acked<u64>,
    next_id: AtomicU64,
}

impl Publisher {
    /// Takes a connection that [`connect`] has already made usable.
    pub fn new(ws: Conn) -> Publisher {
        Publisher {
            acked: Acked::new(ws, classify),
            next_id: AtomicU64::new(1),
        }
    }

    /// Emits `publish {room, data}`; resolves to whether the server acknowledged it in time.
    pub fn publish(&self, room: &str, data: Value) -> impl Future<Output = bool> + use<> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = engineio::event("publish", &json!({ "room": room, "data": data }), Some(id));
        self.acked.request(id, text)
    }
}

/// A publisher's view of an Engine.IO frame: a ping to answer, an ack, or nothing.
fn classify(text: &str) -> Inbound<u64> {
    match engineio::decode(text) {
        Ok(Packet::Ping) => Inbound::Reply(engineio::PONG.to_owned()),
        Ok(Packet::Message(p)) if p.kind == Kind::Ack => match p.id {
            Some(id) => Inbound::Ack(id, p.ack_ok()),
            None => Inbound::Other,
        },
        _ => Inbound::Other,
    }
}
