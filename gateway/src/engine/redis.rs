//! The Redis engine: a thin adapter between the node's local delivery index and the Redis
//! [`Backplane`]. One task turns backplane deliveries into client frames (built once per
//! message and shared by every local subscriber); subscribes count one backplane reference per
//! local subscriber; resuming subscribers get history first, with live messages held back until
//! the replay is queued and live repeats of replayed offsets dropped (see [`Resumes`]).

use super::{EngineError, Position, Published, Subscribed};
use crate::backplane::{Backplane, BackplaneError, BackplaneState, Deliveries, Delivery, Recovery};
use crate::frame::Frame;
use crate::outbox::Outbox;
use crate::protocol::{ServerMessage, Since, encode};
use crate::subscriptions::{ConnId, Subscriptions};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::AbortHandle;
use tokio::time::Instant;

const SHARDS: usize = 32;

/// Live frames held for one resuming connection are capped; beyond this the resume reports
/// `recovered: false` rather than holding unbounded memory.
const MAX_HELD: usize = 10_000;

pub struct RedisEngine {
    local: Arc<Subscriptions>,
    backplane: Backplane,
    resumes: Arc<Resumes>,
    delivery_task: AbortHandle,
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        self.delivery_task.abort();
    }
}

impl RedisEngine {
    /// Wraps a started backplane and spawns the task that delivers what it receives.
    pub fn new(local: Arc<Subscriptions>, backplane: Backplane, deliveries: Deliveries) -> Self {
        let resumes = Arc::new(Resumes::new());
        let task = tokio::spawn(deliver(
            deliveries,
            Arc::clone(&local),
            Arc::clone(&resumes),
        ));
        RedisEngine {
            local,
            backplane,
            resumes,
            delivery_task: task.abort_handle(),
        }
    }

    pub fn local(&self) -> &Subscriptions {
        &self.local
    }

    pub fn backplane(&self) -> &Backplane {
        &self.backplane
    }

    pub fn state(&self) -> BackplaneState {
        self.backplane.state()
    }

    /// Subscribes a connection: one backplane reference per local subscriber (the backplane
    /// subscribes the topic for the first and confirms before returning), then the position —
    /// or, with `since`, the replay.
    pub async fn subscribe(
        &self,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        channel: &str,
        since: Option<&Since>,
    ) -> Result<Subscribed, EngineError> {
        let was_member =
            self.local.is_subscribed(channel, conn) || self.resumes.is_resuming(channel, conn);
        match since {
            None if was_member => {
                let position = self
                    .backplane
                    .position(channel)
                    .await
                    .map_err(unavailable)?;
                Ok(subscribed(position, None))
            }
            None => {
                self.local.subscribe(channel, conn, outbox);
                let result = self.join(channel).await;
                let result = match result {
                    Ok(()) => self.backplane.position(channel).await.map_err(unavailable),
                    Err(error) => Err(error),
                };
                match result {
                    Ok(position) => Ok(subscribed(position, None)),
                    Err(error) => {
                        self.local.unsubscribe(channel, conn);
                        self.backplane.unsubscribe_channel(channel).await;
                        Err(error)
                    }
                }
            }
            Some(since) => self.resume(conn, outbox, channel, since, was_member).await,
        }
    }

    /// Subscribe with `since`: hold live messages for this connection, make sure the topic is
    /// subscribed, read history, then queue the replay, the held messages it did not cover,
    /// and join live delivery — the last step under the channel's lock, so no live message
    /// slips in between.
    async fn resume(
        &self,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        channel: &str,
        since: &Since,
        was_member: bool,
    ) -> Result<Subscribed, EngineError> {
        self.resumes.hold(channel, conn);
        let joined = if was_member {
            // A repeated subscribe replays from `since` again; the reference is kept.
            self.local.unsubscribe(channel, conn);
            Ok(())
        } else {
            self.join(channel).await
        };
        let read = match joined {
            Ok(()) => self.read_since(channel, since).await,
            Err(error) => Err(error),
        };
        let (recovery, position) = match read {
            Ok(read) => read,
            Err(error) => {
                self.resumes.release(channel, conn);
                if was_member {
                    self.local.subscribe(channel, conn, outbox);
                } else {
                    self.backplane.unsubscribe_channel(channel).await;
                }
                return Err(error);
            }
        };
        let mut recovered = recovery.recovered;
        let mut shard = self.resumes.lock(channel);
        let held = Resumes::take(&mut shard, channel, conn);
        if held.overflowed {
            recovered = false;
        }
        let now = Instant::now();
        let mut last = since.offset;
        if recovered {
            for (offset, data) in &recovery.messages {
                if let Some(frame) = message_frame(channel, *offset, data) {
                    outbox.push(frame, now);
                    last = *offset;
                }
            }
        }
        let mut live_passed = !recovered;
        for held in held.frames {
            // Held messages of another epoch (Redis lost its data meanwhile) are all new.
            if held.offset > last || *held.epoch != *position.epoch {
                outbox.push(held.frame, now);
                live_passed = true;
            }
        }
        if live_passed {
            self.local.subscribe(channel, conn, outbox);
        } else {
            // Live messages up to `last` may still be on their way from Redis (history can be
            // read before the live copy arrives): join at the first live message past it.
            let catching = Resume::Catching {
                floor: last,
                epoch: Arc::clone(&position.epoch),
                outbox: Arc::clone(outbox),
            };
            shard
                .entry(channel.into())
                .or_default()
                .insert(conn, catching);
        }
        drop(shard);
        Ok(subscribed(position, Some(recovered)))
    }

    /// The history after `since` and the position for the ack. A channel with nothing
    /// published yet gets its epoch started, so that the ack names it.
    async fn read_since(
        &self,
        channel: &str,
        since: &Since,
    ) -> Result<(Recovery, Position), EngineError> {
        let recovery = self
            .backplane
            .history(channel, since.offset, &since.epoch)
            .await
            .map_err(unavailable)?;
        let position = if recovery.position.epoch.is_empty() {
            self.backplane
                .position(channel)
                .await
                .map_err(unavailable)?
        } else {
            recovery.position.clone()
        };
        Ok((recovery, position))
    }

    /// One backplane reference for a new local subscriber.
    async fn join(&self, channel: &str) -> Result<(), EngineError> {
        self.backplane
            .subscribe_channel(channel)
            .await
            .map_err(unavailable)
    }

    /// Unsubscribes a connection and releases its backplane reference.
    pub async fn unsubscribe(&self, conn: ConnId, channel: &str) {
        let was_member = {
            let mut shard = self.resumes.lock(channel);
            let resuming = Resumes::remove(&mut shard, channel, conn).is_some();
            let indexed = self.local.is_subscribed(channel, conn);
            self.local.unsubscribe(channel, conn);
            resuming || indexed
        };
        if was_member {
            self.backplane.unsubscribe_channel(channel).await;
        }
    }

    pub async fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        idempotency_key: Option<&str>,
    ) -> Result<Published, EngineError> {
        let (position, duplicate) = self
            .backplane
            .publish_once(channel, data, idempotency_key)
            .await
            .map_err(unavailable)?;
        Ok(Published {
            position,
            duplicate,
        })
    }

    /// Local connections of `to` get the frame directly; otherwise it goes through the
    /// registry to whichever node holds the client.
    pub async fn send(&self, from: &str, to: &str, data: &RawValue) -> Result<(), EngineError> {
        let frame = Frame::text(encode(&ServerMessage::Direct { from, data }));
        if self.local.deliver_client(to, &frame, Instant::now()) > 0 {
            return Ok(());
        }
        match self.backplane.send_direct(to, from, data).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(EngineError::ClientNotFound(to.to_owned())),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Writes the client's registry entry (kept and retried by the backplane if Redis is down).
    pub async fn register(&self, client_id: &str) {
        if let Err(error) = self.backplane.register_client(client_id).await {
            tracing::debug!(%error, client_id, "registry write failed; the refresh retries it");
        }
    }

    pub async fn unregister(&self, client_id: &str) {
        if let Err(error) = self.backplane.unregister_client(client_id).await {
            tracing::debug!(%error, client_id, "registry delete failed; the entry expires");
        }
    }

    pub async fn report_presence(&self, connections: usize, cap: usize, state: &str) {
        if let Err(error) = self
            .backplane
            .set_presence(connections as u64, cap as u64, state)
            .await
        {
            tracing::debug!(%error, "presence write failed");
        }
    }
}

fn subscribed(position: Position, recovered: Option<bool>) -> Subscribed {
    Subscribed {
        position,
        recovered,
    }
}

fn unavailable(error: BackplaneError) -> EngineError {
    EngineError::Unavailable(error.to_string())
}

/// The `message` frame for raw JSON from the backplane; `None` (logged) if it is not JSON.
fn message_frame(channel: &str, offset: u64, data: &Bytes) -> Option<Frame> {
    match serde_json::from_slice::<&RawValue>(data) {
        Ok(data) => Some(Frame::text(encode(&ServerMessage::Message {
            channel,
            offset,
            data,
        }))),
        Err(error) => {
            tracing::warn!(%error, channel, offset, "dropping a channel message that is not JSON");
            None
        }
    }
}

/// Consumes backplane deliveries until the backplane stops.
async fn deliver(mut deliveries: Deliveries, local: Arc<Subscriptions>, resumes: Arc<Resumes>) {
    while let Some(delivery) = deliveries.recv().await {
        let at = Instant::now();
        match delivery {
            Delivery::Channel {
                channel,
                offset,
                epoch,
                data,
            } => {
                let Some(frame) = message_frame(&channel, offset, &data) else {
                    continue;
                };
                let mut shard = resumes.lock(&channel);
                local.deliver_channel(&channel, &frame, at);
                let live = Live {
                    offset,
                    epoch: &epoch,
                    frame: &frame,
                    at,
                };
                Resumes::offer(&mut shard, &channel, &live, &local);
                drop(shard);
            }
            Delivery::Direct { to, from, data } => {
                let Ok(data) = serde_json::from_slice::<&RawValue>(&data) else {
                    tracing::warn!(to, "dropping a direct message that is not JSON");
                    continue;
                };
                let frame = Frame::text(encode(&ServerMessage::Direct { from: &from, data }));
                local.deliver_client(&to, &frame, at);
            }
        }
    }
}

/// A live channel message as the delivery task sees it.
struct Live<'a> {
    offset: u64,
    epoch: &'a str,
    frame: &'a Frame,
    at: Instant,
}

/// A live message held for a resuming connection.
struct Held {
    offset: u64,
    epoch: Arc<str>,
    frame: Frame,
}

/// What was held for one resuming connection.
#[derive(Default)]
struct HeldFrames {
    frames: Vec<Held>,
    overflowed: bool,
}

/// Where a resuming connection is.
enum Resume {
    /// The replay is being read: live messages are held.
    Holding(HeldFrames),
    /// The replay is queued up to `floor`: live messages at or below it (of the same epoch)
    /// are repeats; the first one past it is queued and the connection joins the local index.
    Catching {
        floor: u64,
        epoch: Arc<str>,
        outbox: Arc<Outbox>,
    },
}

type ResumeShard = HashMap<Box<str>, HashMap<ConnId, Resume>>;

/// Connections in the middle of a resume, per channel. The delivery task delivers a channel
/// message and offers it to the channel's resumers under the same shard lock that a resume
/// holds while it queues its replay and joins, which makes the hand-over gapless; the
/// `Catching` state makes it duplicate-free.
struct Resumes {
    hasher: RandomState,
    shards: Box<[Mutex<ResumeShard>]>,
}

impl Resumes {
    fn new() -> Self {
        Resumes {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn lock(&self, channel: &str) -> MutexGuard<'_, ResumeShard> {
        let index = self.hasher.hash_one(channel) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_resuming(&self, channel: &str, conn: ConnId) -> bool {
        self.lock(channel)
            .get(channel)
            .is_some_and(|waiting| waiting.contains_key(&conn))
    }

    /// Starts holding live messages of `channel` for `conn` (replacing an earlier resume).
    fn hold(&self, channel: &str, conn: ConnId) {
        self.lock(channel)
            .entry(channel.into())
            .or_default()
            .insert(conn, Resume::Holding(HeldFrames::default()));
    }

    /// Stops holding and discards what was held (a failed resume).
    fn release(&self, channel: &str, conn: ConnId) {
        let mut shard = self.lock(channel);
        Self::remove(&mut shard, channel, conn);
    }

    fn remove(shard: &mut ResumeShard, channel: &str, conn: ConnId) -> Option<Resume> {
        let waiting = shard.get_mut(channel)?;
        let resume = waiting.remove(&conn);
        if waiting.is_empty() {
            shard.remove(channel);
        }
        resume
    }

    /// The messages held for `conn` (none if it was not holding).
    fn take(shard: &mut ResumeShard, channel: &str, conn: ConnId) -> HeldFrames {
        match Self::remove(shard, channel, conn) {
            Some(Resume::Holding(held)) => held,
            _ => HeldFrames::default(),
        }
    }

    /// Offers a live message to every connection resuming `channel`: held while the replay is
    /// read; after it, dropped as a repeat or queued (and the connection joins the index).
    fn offer(shard: &mut ResumeShard, channel: &str, live: &Live<'_>, local: &Subscriptions) {
        let Some(waiting) = shard.get_mut(channel) else {
            return;
        };
        let mut joined = Vec::new();
        for (conn, resume) in waiting.iter_mut() {
            match resume {
                Resume::Holding(held) if held.frames.len() >= MAX_HELD => held.overflowed = true,
                Resume::Holding(held) => held.frames.push(Held {
                    offset: live.offset,
                    epoch: Arc::from(live.epoch),
                    frame: live.frame.clone(),
                }),
                Resume::Catching { floor, epoch, .. }
                    if **epoch == *live.epoch && live.offset <= *floor => {}
                Resume::Catching { outbox, .. } => {
                    outbox.push(live.frame.clone(), live.at);
                    local.subscribe(channel, *conn, outbox);
                    joined.push(*conn);
                }
            }
        }
        for conn in joined {
            waiting.remove(&conn);
        }
        if waiting.is_empty() {
            shard.remove(channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::SlowConsumerPolicy;

    fn offer(resumes: &Resumes, local: &Subscriptions, offset: u64, epoch: &str) {
        let frame = Frame::text(offset.to_string());
        let live = Live {
            offset,
            epoch,
            frame: &frame,
            at: Instant::now(),
        };
        let mut shard = resumes.lock("c");
        local.deliver_channel("c", &frame, live.at);
        Resumes::offer(&mut shard, "c", &live, local);
    }

    fn frames(outbox: &Outbox) -> Vec<String> {
        let mut batch = Vec::new();
        outbox.take_all(&mut batch);
        batch.iter().map(|q| q.frame.payload().to_owned()).collect()
    }

    #[test]
    fn live_messages_are_held_then_deduplicated_against_the_replay() {
        let local = Subscriptions::new();
        let resumes = Resumes::new();
        let outbox = Arc::new(Outbox::new(16, SlowConsumerPolicy::Disconnect));
        resumes.hold("c", 1);
        offer(&resumes, &local, 7, "e");
        let held = Resumes::take(&mut resumes.lock("c"), "c", 1);
        assert_eq!(
            held.frames.iter().map(|h| h.offset).collect::<Vec<_>>(),
            [7]
        );

        // Replay reached 8 before its live copy arrived: 8 is a repeat, 9 joins live delivery.
        resumes.lock("c").entry("c".into()).or_default().insert(
            1,
            Resume::Catching {
                floor: 8,
                epoch: Arc::from("e"),
                outbox: Arc::clone(&outbox),
            },
        );
        assert!(resumes.is_resuming("c", 1));
        offer(&resumes, &local, 8, "e");
        offer(&resumes, &local, 9, "e");
        offer(&resumes, &local, 10, "e");
        assert_eq!(frames(&outbox), ["9", "10"]);
        assert!(!resumes.is_resuming("c", 1));
        assert!(local.is_subscribed("c", 1));
    }

    #[test]
    fn a_new_epoch_ends_catching_at_once() {
        let local = Subscriptions::new();
        let resumes = Resumes::new();
        let outbox = Arc::new(Outbox::new(16, SlowConsumerPolicy::Disconnect));
        resumes.lock("c").entry("c".into()).or_default().insert(
            1,
            Resume::Catching {
                floor: 8,
                epoch: Arc::from("old"),
                outbox: Arc::clone(&outbox),
            },
        );
        offer(&resumes, &local, 1, "new");
        assert_eq!(frames(&outbox), ["1"]);
        assert!(local.is_subscribed("c", 1));
    }
}
