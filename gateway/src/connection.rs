//! One client connection after the upgrade: a single task reads client frames, writes queued
//! frames in batches (the shared, pre-encoded frames of [`crate::frame`], one vectored write
//! per batch), and keeps the heartbeat. It ends on
//! close, on a protocol violation, on an oversized message (1009), when the client stops
//! answering (heartbeat timeout), when it cannot keep up (1008 under `disconnect`), or when
//! a drain moves it away (a `reconnect` hint, then 1012 at the hinted time), or when its token
//! expires (4001, `exp` plus the leeway) without a `refresh` having brought a fresh one.

use crate::auth::{AuthError, Identity};
use crate::drain::Phase;
use crate::metrics::metrics;
use crate::node::{ConnSlot, Node};
use crate::outbox::{Outbox, Queued};
use crate::protocol::{
    ClientMessage, ErrorCode, ProtocolError, ServerMessage, encode, parse_client,
};
use crate::subscriptions::ConnId;
use crate::wire::Wire;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use wsfleet_api::codes::CLOSE_TOKEN_EXPIRED;

/// How long writing our close frame may take before the socket is just dropped.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_millis(250);

/// Write batches per wake-up before the task lets reads and heartbeats run.
const MAX_BATCHES_PER_WAKE: usize = 8;

/// Most channels one connection may be subscribed to at once.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

type Socket = WebSocketStream<Wire<TcpStream>>;

/// The WebSocket settings of every connection: small buffers keep idle connections lean
/// (tungstenite's default read buffer is 128 KiB, allocated eagerly). Channel and direct
/// messages bypass tungstenite's write buffer ([`crate::wire`]); it only carries replies and
/// control frames, is allocated on first use and keeps its largest size, so it stays small.
fn websocket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(2048)
        .max_write_buffer_size(4 * max_message_bytes.max(64 * 1024))
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Why the connection task ends.
enum End {
    /// The client closed, or the socket failed; nothing more to send.
    Gone,
    /// Close the socket with this code and reason.
    Close(CloseCode, &'static str),
    /// A drain's close: 1012 (service restart) with the drain's reason.
    Restart(Arc<str>),
}

/// When a drain told this connection to leave, and why.
struct Leave {
    at: Instant,
    reason: Arc<str>,
}

/// What one connection holds beyond its socket. Kept small: idle connections are most of a
/// node's memory.
struct Connection<'a> {
    node: &'a Node,
    id: ConnId,
    identity: Identity,
    outbox: Arc<Outbox>,
    /// Channels this connection is subscribed to, for cleanup at close.
    channels: Vec<Box<str>>,
    last_seen: Instant,
    /// When the token's `exp` plus the leeway passes; `None` for tokens without `exp` and
    /// anonymous clients.
    expires: Option<Instant>,
}

/// Serves an upgraded connection until it ends, then releases its subscriptions and registry
/// entry. `answer` is the `101 Switching Protocols`, held back to leave with the `welcome` in
/// one write; `early` is what the client sent after its request head.
pub async fn run(
    slot: ConnSlot,
    stream: TcpStream,
    early: Vec<u8>,
    answer: Bytes,
    identity: Identity,
) {
    let node = slot.node();
    let id = slot.id;
    let config = &node.config;
    let mut wire = Wire::new(stream);
    wire.queue(answer);
    let settings = Some(websocket_config(config.max_message_bytes));
    let mut ws = if early.is_empty() {
        WebSocketStream::from_raw_socket(wire, Role::Server, settings).await
    } else {
        WebSocketStream::from_partially_read(wire, early, Role::Server, settings).await
    };
    let outbox = Arc::new(Outbox::new(
        config.send_queue_messages,
        config.slow_consumer_policy,
    ));
    Box::pin(node.engine.register(&identity.client_id, id, &outbox)).await;
    let expires = expiry(node, &identity);
    let mut conn = Connection {
        node,
        id,
        identity,
        outbox,
        channels: Vec::new(),
        last_seen: Instant::now(),
        expires,
    };
    let end = conn.serve(&mut ws).await;
    let frame = match end {
        End::Gone => None,
        End::Close(code, reason) => Some(CloseFrame {
            code,
            reason: reason.into(),
        }),
        End::Restart(reason) => {
            metrics().drain_closes.inc();
            Some(CloseFrame {
                code: CloseCode::Restart,
                reason: reason.to_string().into(),
            })
        }
    };
    if let Some(frame) = frame {
        tracing::debug!(client = %conn.identity.client_id, code = u16::from(frame.code), reason = %frame.reason, "closing");
        // The close frame only has to reach the kernel; a client whose socket is full (a
        // zombie, a slow consumer) is not worth waiting for.
        let close = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, ws.close(Some(frame)));
        let _ = Box::pin(close).await;
    }
    Box::pin(conn.release()).await;
}

impl Connection<'_> {
    async fn serve(&mut self, ws: &mut Socket) -> End {
        let welcome = encode(&ServerMessage::Welcome {
            client_id: &self.identity.client_id,
            node: &self.node.config.node_id,
            heartbeat_ms: self.node.config.heartbeat_ms(),
            expires_at_ms: self.identity.expires_at.map(|exp| exp.saturating_mul(1000)),
        });
        // The queued 101 leaves together with the welcome.
        if Box::pin(self.write(ws, Message::text(welcome)))
            .await
            .is_err()
        {
            return End::Gone;
        }
        let interval = self.node.config.heartbeat_interval;
        let timeout = self.node.config.heartbeat_timeout;
        let mut next_ping = Instant::now() + interval;
        let mut batch = Vec::new();
        let mut phase = self.node.lifecycle.watch();
        let mut leave = None;
        // A drain may have begun between admission and here.
        if let Some(end) = Box::pin(self.on_phase(ws, &mut phase, &mut leave, true)).await {
            return end;
        }
        // One timer for the connection's life, moved only when its deadline changes, so that
        // delivering messages does not re-register a timer each time.
        let heartbeat = sleep_until(next_ping.min(self.last_seen + timeout));
        tokio::pin!(heartbeat);
        loop {
            let mut deadline = next_ping.min(self.last_seen + timeout);
            if let Some(leave) = &leave {
                deadline = deadline.min(leave.at);
            }
            if let Some(expires) = self.expires {
                deadline = deadline.min(expires);
            }
            if heartbeat.deadline() != deadline {
                heartbeat.as_mut().reset(deadline);
            }
            let outbox = Arc::clone(&self.outbox);
            tokio::select! {
                frame = ws.next() => {
                    let end = match frame {
                        Some(Ok(message)) => Box::pin(self.on_frame(ws, message)).await,
                        Some(Err(err)) => Some(read_error(err)),
                        None => Some(End::Gone),
                    };
                    if let Some(end) = end {
                        return end;
                    }
                }
                () = outbox.ready() => {
                    // Boxed: the write path's state would otherwise enlarge every idle connection; one
                    // small allocation per batch is cheap next to the write syscall.
                    if let Some(end) = Box::pin(self.flush_outbox(ws, &mut batch)).await {
                        return end;
                    }
                }
                changed = phase.changed() => {
                    // The sender lives in the node, which outlives every connection.
                    if changed.is_err() {
                        return End::Gone;
                    }
                    if let Some(end) = Box::pin(self.on_phase(ws, &mut phase, &mut leave, false)).await {
                        return end;
                    }
                }
                () = &mut heartbeat => {
                    let now = Instant::now();
                    if let Some(leave) = leave.as_ref().filter(|l| now >= l.at) {
                        return End::Restart(Arc::clone(&leave.reason));
                    }
                    if self.expires.is_some_and(|at| now >= at) {
                        metrics().token_expiry_closes.inc();
                        return End::Close(
                            CloseCode::from(CLOSE_TOKEN_EXPIRED),
                            "token expired; refresh it before exp and reconnect",
                        );
                    }
                    if now >= self.last_seen + timeout {
                        metrics().heartbeat_timeouts.inc();
                        return End::Close(CloseCode::Away, "heartbeat timeout");
                    }
                    // Not timed out, so this is `next_ping` (the timer is re-armed whenever
                    // `last_seen` moves); moving `next_ping` re-arms it again.
                    next_ping = now + interval;
                    if Box::pin(self.write(ws, Message::Ping(Default::default()))).await.is_err() {
                        return End::Gone;
                    }
                }
            }
        }
    }

    /// Follows the node's phase: on a drain, tells the client when to reconnect (once; a later
    /// drain or a cancel does not change a time already given); past the deadline, closes. A
    /// partial drain moves the connection only if it gets one of the drain's slots, and never
    /// a connection that is just `joining` (it came to this node a moment ago).
    async fn on_phase(
        &mut self,
        ws: &mut Socket,
        phase: &mut watch::Receiver<Phase>,
        leave: &mut Option<Leave>,
        joining: bool,
    ) -> Option<End> {
        let current = phase.borrow_and_update().clone();
        let (drain, after) = match current {
            Phase::Serving => return None,
            Phase::Draining(_) | Phase::Shedding(_) if leave.is_some() => return None,
            Phase::Shedding(_) if joining => return None,
            Phase::Shedding(drain) => match drain.claim_slot() {
                Some(after) => (drain, after),
                None => return None,
            },
            Phase::Draining(drain) => {
                let after = drain.claim();
                (drain, after)
            }
            Phase::Closing(drain) | Phase::Drained(drain) => {
                let reason = leave.as_ref().map_or(&drain.reason, |l| &l.reason);
                return Some(End::Restart(Arc::clone(reason)));
            }
        };
        let hint = encode(&ServerMessage::Reconnect {
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            reason: &drain.reason,
        });
        *leave = Some(Leave {
            at: Instant::now() + after,
            reason: Arc::clone(&drain.reason),
        });
        if self.write(ws, Message::text(hint)).await.is_err() {
            return Some(End::Gone);
        }
        metrics().drain_reconnects.inc();
        None
    }

    /// Handles one frame from the client; `Some` ends the connection.
    async fn on_frame(&mut self, ws: &mut Socket, message: Message) -> Option<End> {
        self.last_seen = Instant::now();
        match message {
            Message::Text(text) => {
                metrics().messages_in.inc();
                let reply = self.on_text(&text).await;
                if let Some(reply) = reply
                    && self.write(ws, Message::text(reply)).await.is_err()
                {
                    return Some(End::Gone);
                }
                None
            }
            Message::Binary(_) => {
                metrics().messages_in.inc();
                let error = ProtocolError::new(
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text frames",
                );
                match self.write(ws, Message::text(error.to_frame())).await {
                    Ok(()) => None,
                    Err(_) => Some(End::Gone),
                }
            }
            // tungstenite queues the pong itself; it goes out with the next flush.
            Message::Ping(_) => {
                let timeout = self.node.config.heartbeat_timeout;
                match tokio::time::timeout(timeout, ws.flush()).await {
                    Ok(Ok(())) => None,
                    _ => Some(End::Gone),
                }
            }
            Message::Pong(_) | Message::Frame(_) => None,
            // tungstenite queued the close reply; send it so the client sees a clean close.
            Message::Close(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                Some(End::Gone)
            }
        }
    }

    /// Applies one client request; returns the reply frame, if one is due.
    async fn on_text(&mut self, text: &str) -> Option<String> {
        let message = match parse_client(text, self.node.config.max_message_bytes) {
            Ok(message) => message,
            Err(error) => return Some(error.to_frame()),
        };
        let id = message.request_id().map(str::to_owned);
        match self.apply(message).await {
            Ok(ack) => id.is_some().then(|| ack.encode(id.as_deref())),
            Err(error) => Some(error.with_id(id.as_deref()).to_frame()),
        }
    }

    async fn apply(&mut self, message: ClientMessage) -> Result<Ack, ProtocolError> {
        let engine = &self.node.engine;
        match message {
            ClientMessage::Subscribe { channel, since, .. } => {
                self.check_channel(&channel)?;
                let already = self.channels.iter().any(|c| **c == *channel);
                if !already && self.channels.len() >= MAX_SUBSCRIPTIONS {
                    return Err(ProtocolError::new(
                        ErrorCode::BadRequest,
                        format!("a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions"),
                    ));
                }
                let subscribed = engine
                    .subscribe(self.id, &self.outbox, &channel, since.as_ref())
                    .await
                    .map_err(|e| ProtocolError::new(e.code(), e.to_string()))?;
                if !already {
                    self.channels.push(channel.into_boxed_str());
                }
                Ok(Ack {
                    offset: Some(subscribed.position.offset),
                    epoch: Some(subscribed.position.epoch),
                    recovered: subscribed.recovered,
                    ..Ack::default()
                })
            }
            ClientMessage::Unsubscribe { channel, .. } => {
                if let Some(index) = self.channels.iter().position(|c| **c == *channel) {
                    self.channels.swap_remove(index);
                    engine
                        .unsubscribe(self.id, &channel)
                        .await
                        .map_err(|e| ProtocolError::new(e.code(), e.to_string()))?;
                }
                Ok(Ack::default())
            }
            ClientMessage::Publish {
                channel,
                data,
                idempotency_key,
                ..
            } => {
                self.check_channel(&channel)?;
                let published = engine
                    .publish(&channel, &data, idempotency_key.as_deref())
                    .await
                    .map_err(|e| ProtocolError::new(e.code(), e.to_string()))?;
                Ok(Ack {
                    offset: Some(published.position.offset),
                    epoch: Some(published.position.epoch),
                    duplicate: published.duplicate.then_some(true),
                    ..Ack::default()
                })
            }
            ClientMessage::Send { to, data, .. } => {
                engine
                    .send(&self.identity.client_id, &to, &data)
                    .await
                    .map_err(|e| ProtocolError::new(e.code(), e.to_string()))?;
                Ok(Ack::default())
            }
            ClientMessage::Refresh { token, .. } => {
                let fresh = self.node.auth.verify(&token).map_err(|err| {
                    let code = match err {
                        AuthError::Unauthorized(_) => ErrorCode::Unauthorized,
                        AuthError::Forbidden(_) => ErrorCode::Forbidden,
                    };
                    ProtocolError::new(code, err.to_string())
                })?;
                // A connection's client id is its registry entry and what others send to:
                // a token for someone else cannot take it over.
                if fresh.client_id != self.identity.client_id {
                    return Err(ProtocolError::new(
                        ErrorCode::Forbidden,
                        "a refreshed token must have the same `sub` as the connection's",
                    ));
                }
                self.expires = expiry(self.node, &fresh);
                let expires_at_ms = fresh.expires_at.map(|exp| exp.saturating_mul(1000));
                self.identity = fresh;
                Ok(Ack {
                    expires_at_ms,
                    ..Ack::default()
                })
            }
        }
    }

    fn check_channel(&self, channel: &str) -> Result<(), ProtocolError> {
        if self.identity.may_use(channel) {
            Ok(())
        } else {
            Err(ProtocolError::new(
                ErrorCode::Forbidden,
                format!("token does not allow channel `{channel}`"),
            ))
        }
    }

    /// Writes queued frames in batches (one vectored write per batch when the socket takes
    /// it) until the queue is empty, the client falls too far behind, or the write stalls.
    async fn flush_outbox(&mut self, ws: &mut Socket, batch: &mut Vec<Queued>) -> Option<End> {
        for _ in 0..MAX_BATCHES_PER_WAKE {
            if self.outbox.overflowed() {
                return Some(slow_consumer());
            }
            self.outbox.take_all(batch);
            let Some(oldest) = batch.first().map(|q| q.at) else {
                if batch.capacity() > 64 {
                    batch.shrink_to_fit();
                }
                return None;
            };
            let count = batch.len() as u64;
            let write = async {
                // Whatever tungstenite still holds (a pong) goes first; then the shared
                // frames go to the socket as they are, without a copy per connection.
                ws.flush().await?;
                let wire = ws.get_mut();
                for queued in batch.drain(..) {
                    wire.queue(queued.frame.into_bytes());
                }
                wire.flush().await.map_err(tungstenite::Error::Io)
            };
            let outcome = tokio::select! {
                written = tokio::time::timeout(self.node.config.heartbeat_timeout, write) => written,
                () = self.outbox.overflowed_signal() => return Some(slow_consumer()),
            };
            batch.clear();
            match outcome {
                Ok(Ok(())) => {
                    metrics().messages_out.inc_by(count);
                    metrics()
                        .delivery_latency
                        .observe(oldest.elapsed().as_secs_f64());
                }
                Ok(Err(_)) => return Some(End::Gone),
                Err(_) => {
                    metrics().dropped_slow_consumer.inc();
                    return Some(slow_consumer());
                }
            }
        }
        // Still busy: let the other branches (reads, heartbeat) run, then come back.
        self.outbox.wake();
        None
    }

    /// Writes and flushes one frame, bounded by the heartbeat timeout so a client that stopped
    /// reading cannot hold the task forever.
    async fn write(&self, ws: &mut Socket, message: Message) -> Result<(), ()> {
        let is_data = matches!(message, Message::Text(_));
        match tokio::time::timeout(self.node.config.heartbeat_timeout, ws.send(message)).await {
            Ok(Ok(())) => {
                if is_data {
                    metrics().messages_out.inc();
                }
                Ok(())
            }
            _ => Err(()),
        }
    }

    /// Drops every subscription and the registry entry of this connection.
    async fn release(&mut self) {
        let engine = &self.node.engine;
        for channel in std::mem::take(&mut self.channels) {
            if let Err(err) = engine.unsubscribe(self.id, &channel).await {
                tracing::warn!(%err, channel = &*channel, "unsubscribe at close failed");
            }
        }
        engine.unregister(&self.identity.client_id, self.id).await;
    }
}

/// The fields of an `ack` beyond the request id.
#[derive(Default)]
struct Ack {
    offset: Option<u64>,
    epoch: Option<Arc<str>>,
    recovered: Option<bool>,
    expires_at_ms: Option<u64>,
    duplicate: Option<bool>,
}

impl Ack {
    fn encode(&self, id: Option<&str>) -> String {
        encode(&ServerMessage::Ack {
            id,
            offset: self.offset,
            epoch: self.epoch.as_deref(),
            recovered: self.recovered,
            expires_at_ms: self.expires_at_ms,
            duplicate: self.duplicate,
        })
    }
}

/// When a connection holding `identity` must close: its `exp` plus the leeway, as an instant.
fn expiry(node: &Node, identity: &Identity) -> Option<Instant> {
    let exp = identity.expires_at?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now) + node.auth.leeway();
    Some(Instant::now() + left)
}

fn slow_consumer() -> End {
    End::Close(CloseCode::Policy, "slow consumer: send queue full")
}

/// Maps a read error to how the connection ends: oversized messages get 1009, protocol
/// violations 1002, everything else (reset, EOF) just ends.
fn read_error(err: tungstenite::Error) -> End {
    match err {
        tungstenite::Error::Capacity(_) => End::Close(CloseCode::Size, "message too large"),
        tungstenite::Error::Protocol(_) => End::Close(CloseCode::Protocol, "protocol error"),
        tungstenite::Error::Utf8(_) => End::Close(CloseCode::Invalid, "invalid UTF-8"),
        _ => End::Gone,
    }
}
