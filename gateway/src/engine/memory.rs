//! The in-process engine: one node, no backplane. Each channel keeps its last offset and a
//! bounded ring of recent message frames (by count and age) for resuming subscribers. The epoch
//! is drawn at start-up, so a restart starts a new history generation (clients that resume
//! with an older epoch are told `recovered: false`).

use super::{EngineError, HistoryBounds, Position, Published, Subscribed};
use crate::frame::Frame;
use crate::outbox::Outbox;
use crate::protocol::{ServerMessage, Since, encode};
use crate::subscriptions::{ConnId, Subscriptions};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const SHARDS: usize = 32;

/// One retained message: its offset, its encoded `message` frame and when it was published.
struct Entry {
    offset: u64,
    frame: Frame,
    at: Instant,
}

/// A channel's last assigned offset and its retained recent messages, oldest first.
#[derive(Default)]
struct ChannelLog {
    last: u64,
    history: VecDeque<Entry>,
    /// Idempotency keys seen within the window: key → (offset, when), and the keys in the
    /// order they were seen, for expiring them.
    seen: HashMap<String, (u64, Instant)>,
    seen_order: VecDeque<(Instant, String)>,
}

impl ChannelLog {
    fn append(&mut self, entry: Entry, bounds: &HistoryBounds) {
        self.history.push_back(entry);
        while self.history.len() > bounds.max_messages {
            self.history.pop_front();
        }
        self.expire(bounds);
    }

    /// The offset an idempotency key already published within `window`, if any; forgets the
    /// keys older than the window.
    fn seen(&mut self, key: &str, window: Duration) -> Option<u64> {
        let now = Instant::now();
        while let Some((at, _)) = self.seen_order.front()
            && now.duration_since(*at) > window
        {
            if let Some((at, old)) = self.seen_order.pop_front()
                && self
                    .seen
                    .get(&old)
                    .is_some_and(|(_, seen_at)| *seen_at == at)
            {
                self.seen.remove(&old);
            }
        }
        self.seen.get(key).map(|(offset, _)| *offset)
    }

    fn remember(&mut self, key: &str, offset: u64, at: Instant) {
        self.seen.insert(key.to_owned(), (offset, at));
        self.seen_order.push_back((at, key.to_owned()));
    }

    /// Drops messages older than the age bound (zero disables it).
    fn expire(&mut self, bounds: &HistoryBounds) {
        if bounds.max_age.is_zero() {
            return;
        }
        let now = Instant::now();
        while self
            .history
            .front()
            .is_some_and(|e| now.duration_since(e.at) > bounds.max_age)
        {
            self.history.pop_front();
        }
    }

    /// Whether every message after `since` is still retained.
    fn reaches(&self, since: u64) -> bool {
        if since > self.last {
            return false;
        }
        since == self.last
            || self
                .history
                .front()
                .is_some_and(|oldest| oldest.offset <= since + 1)
    }
}

/// Channel logs for one shard of channel names.
type Logs = HashMap<Box<str>, ChannelLog>;

pub struct MemoryEngine {
    local: Arc<Subscriptions>,
    epoch: Arc<str>,
    bounds: HistoryBounds,
    idempotency_window: Duration,
    hasher: RandomState,
    /// A shard's lock is held while a message is delivered and while a subscriber is replayed
    /// and added, so subscribers see every offset once, in order.
    logs: Box<[Mutex<Logs>]>,
}

impl MemoryEngine {
    pub fn new(
        local: Arc<Subscriptions>,
        bounds: HistoryBounds,
        idempotency_window: Duration,
    ) -> Self {
        MemoryEngine {
            local,
            epoch: Arc::from(format!("m{:016x}", rand::random::<u64>())),
            bounds,
            idempotency_window,
            hasher: RandomState::new(),
            logs: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    pub fn local(&self) -> &Subscriptions {
        &self.local
    }

    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, Logs> {
        let index = self.hasher.hash_one(channel) as usize % SHARDS;
        self.logs[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn position(&self, offset: u64) -> Position {
        Position {
            offset,
            epoch: Arc::clone(&self.epoch),
        }
    }

    /// Subscribes a connection. With `since`, the messages after it are queued first (when
    /// history still reaches back that far) and the connection joins live delivery under the
    /// same lock, so nothing is missed, repeated or reordered.
    pub fn subscribe(
        &self,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        channel: &str,
        since: Option<&Since>,
    ) -> Subscribed {
        let mut logs = self.shard(channel);
        let log = logs.get_mut(channel);
        let last = log.as_ref().map_or(0, |log| log.last);
        let Some(since) = since else {
            self.local.subscribe(channel, conn, outbox);
            return Subscribed {
                position: self.position(last),
                recovered: None,
            };
        };
        // A repeated subscribe with `since` replays from `since` again.
        self.local.unsubscribe(channel, conn);
        let recovered = match log {
            Some(log) if *since.epoch == *self.epoch => {
                log.expire(&self.bounds);
                let recovered = log.reaches(since.offset);
                if recovered {
                    let now = Instant::now();
                    for entry in log.history.iter().filter(|e| e.offset > since.offset) {
                        outbox.push(entry.frame.clone(), now);
                    }
                }
                recovered
            }
            // Nothing was ever published here in this process: only "nothing seen" resumes.
            None => *since.epoch == *self.epoch && since.offset == 0,
            Some(_) => false,
        };
        self.local.subscribe(channel, conn, outbox);
        Subscribed {
            position: self.position(last),
            recovered: Some(recovered),
        }
    }

    pub fn publish(&self, channel: &str, data: &RawValue) -> Position {
        self.publish_once(channel, data, None).position
    }

    /// Publishes unless `idempotency_key` published on this channel within the window; then
    /// nothing is delivered and the first publish's position is returned as a duplicate.
    pub fn publish_once(
        &self,
        channel: &str,
        data: &RawValue,
        idempotency_key: Option<&str>,
    ) -> Published {
        let at = Instant::now();
        let mut logs = self.shard(channel);
        if !logs.contains_key(channel) {
            logs.insert(channel.into(), ChannelLog::default());
        }
        let Some(log) = logs.get_mut(channel) else {
            return Published {
                position: self.position(0),
                duplicate: false,
            };
        };
        if let Some(key) = idempotency_key
            && let Some(offset) = log.seen(key, self.idempotency_window)
        {
            return Published {
                position: self.position(offset),
                duplicate: true,
            };
        }
        log.last += 1;
        let offset = log.last;
        let frame = Frame::text(encode(&ServerMessage::Message {
            channel,
            offset,
            data,
        }));
        self.local.deliver_channel(channel, &frame, at);
        log.append(Entry { offset, frame, at }, &self.bounds);
        if let Some(key) = idempotency_key {
            log.remember(key, offset, at);
        }
        drop(logs);
        Published {
            position: self.position(offset),
            duplicate: false,
        }
    }

    pub fn send(&self, from: &str, to: &str, data: &RawValue) -> Result<(), EngineError> {
        let frame = Frame::text(encode(&ServerMessage::Direct { from, data }));
        match self.local.deliver_client(to, &frame, Instant::now()) {
            0 => Err(EngineError::ClientNotFound(to.to_owned())),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::SlowConsumerPolicy;
    use std::time::Duration;

    fn engine(max_messages: usize) -> MemoryEngine {
        let bounds = HistoryBounds {
            max_messages,
            max_age: Duration::from_secs(300),
        };
        MemoryEngine::new(
            Arc::new(Subscriptions::new()),
            bounds,
            Duration::from_secs(300),
        )
    }

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(64, SlowConsumerPolicy::Disconnect))
    }

    fn offsets(outbox: &Outbox) -> Vec<u64> {
        let mut batch = Vec::new();
        outbox.take_all(&mut batch);
        batch
            .iter()
            .map(|q| {
                let frame: serde_json::Value = serde_json::from_str(q.frame.payload()).unwrap();
                frame["offset"].as_u64().unwrap()
            })
            .collect()
    }

    fn since(engine: &MemoryEngine, offset: u64) -> Since {
        Since {
            offset,
            epoch: engine.epoch.to_string(),
        }
    }

    #[test]
    fn offsets_grow_per_channel_and_reach_subscribers() {
        let engine = engine(10);
        let outbox = outbox();
        engine.subscribe(1, &outbox, "a", None);
        let data = RawValue::from_string("1".into()).unwrap();
        assert_eq!(engine.publish("a", &data).offset, 1);
        assert_eq!(engine.publish("a", &data).offset, 2);
        assert_eq!(engine.publish("b", &data).offset, 1);
        let mut batch = Vec::new();
        outbox.take_all(&mut batch);
        let texts: Vec<&str> = batch.iter().map(|q| q.frame.payload()).collect();
        assert_eq!(
            texts,
            [
                r#"{"op":"message","channel":"a","offset":1,"data":1}"#,
                r#"{"op":"message","channel":"a","offset":2,"data":1}"#
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_idempotency_key_delivers_nothing_within_the_window() {
        let engine = engine(10);
        let outbox = outbox();
        engine.subscribe(1, &outbox, "a", None);
        let data = RawValue::from_string("1".into()).unwrap();
        let first = engine.publish_once("a", &data, Some("k"));
        let again = engine.publish_once("a", &data, Some("k"));
        assert_eq!((first.position.offset, first.duplicate), (1, false));
        assert_eq!((again.position.offset, again.duplicate), (1, true));
        assert_eq!(
            engine.publish_once("b", &data, Some("k")).position.offset,
            1,
            "per channel"
        );
        assert_eq!(offsets(&outbox), [1], "delivered once");
        // Past the window the key is forgotten: a new message.
        tokio::time::advance(Duration::from_secs(301)).await;
        let later = engine.publish_once("a", &data, Some("k"));
        assert_eq!((later.position.offset, later.duplicate), (2, false));
        assert_eq!(offsets(&outbox), [2]);
    }

    #[test]
    fn resume_replays_what_was_missed_then_continues_live() {
        let engine = engine(10);
        let data = RawValue::from_string("{}".into()).unwrap();
        for _ in 0..5 {
            engine.publish("a", &data);
        }
        let outbox = outbox();
        let subscribed = engine.subscribe(1, &outbox, "a", Some(&since(&engine, 2)));
        assert_eq!(subscribed.recovered, Some(true));
        assert_eq!(subscribed.position.offset, 5);
        engine.publish("a", &data);
        assert_eq!(offsets(&outbox), [3, 4, 5, 6]);
        // Up to date: recovered, nothing to replay.
        let other = self::outbox();
        let subscribed = engine.subscribe(2, &other, "a", Some(&since(&engine, 6)));
        assert_eq!(subscribed.recovered, Some(true));
        assert!(offsets(&other).is_empty());
    }

    #[test]
    fn resume_fails_beyond_history_or_with_another_epoch() {
        let engine = engine(3);
        let data = RawValue::from_string("1".into()).unwrap();
        for _ in 0..6 {
            engine.publish("a", &data);
        }
        let outbox = outbox();
        // Retained: 4, 5, 6. Resuming after 3 works, after 2 does not.
        assert_eq!(
            engine
                .subscribe(1, &outbox, "a", Some(&since(&engine, 3)))
                .recovered,
            Some(true)
        );
        assert_eq!(offsets(&outbox), [4, 5, 6]);
        assert_eq!(
            engine
                .subscribe(2, &outbox, "a", Some(&since(&engine, 2)))
                .recovered,
            Some(false)
        );
        assert_eq!(
            engine
                .subscribe(3, &outbox, "a", Some(&since(&engine, 7)))
                .recovered,
            Some(false)
        );
        let stale = Since {
            offset: 5,
            epoch: "other".into(),
        };
        assert_eq!(
            engine.subscribe(4, &outbox, "a", Some(&stale)).recovered,
            Some(false)
        );
        assert!(offsets(&outbox).is_empty(), "failed resumes replay nothing");
    }

    #[test]
    fn history_expires_by_age() {
        let bounds = HistoryBounds {
            max_messages: 10,
            max_age: Duration::from_millis(1),
        };
        let engine = MemoryEngine::new(
            Arc::new(Subscriptions::new()),
            bounds,
            Duration::from_secs(300),
        );
        let data = RawValue::from_string("1".into()).unwrap();
        engine.publish("a", &data);
        engine.publish("a", &data);
        std::thread::sleep(Duration::from_millis(20));
        let outbox = outbox();
        let subscribed = engine.subscribe(1, &outbox, "a", Some(&since(&engine, 0)));
        assert_eq!(subscribed.recovered, Some(false));
    }

    #[test]
    fn send_to_unknown_client_is_not_found() {
        let engine = engine(10);
        let data = RawValue::from_string("{}".into()).unwrap();
        assert!(matches!(
            engine.send("a", "nobody", &data),
            Err(EngineError::ClientNotFound(_))
        ));
    }
}
