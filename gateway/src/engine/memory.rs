//! The in-process engine: one node, no backplane. Each channel keeps its last offset and a
//! bounded ring of recent message frames (by count and age) for resuming subscribers. The epoch
//! is drawn at start-up, so a restart starts a new history generation (clients that resume
//! with an older epoch are told `recovered: false`).

use super::{EngineError, HistoryBounds, Position, Subscribed};
use crate::frame::Frame;
use crate::outbox::Outbox;
use crate::protocol::{ServerMessage, Since, encode};
use crate::subscriptions::{ConnId, Subscriptions};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
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
}

impl ChannelLog {
    fn append(&mut self, entry: Entry, bounds: &HistoryBounds) {
        self.history.push_back(entry);
        while self.history.len() > bounds.max_messages {
            self.history.pop_front();
        }
        self.expire(bounds);
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
    hasher: RandomState,
    /// A shard's lock is held while a message is delivered and while a subscriber is replayed
    /// and added, so subscribers see every offset once, in order.
    logs: Box<[Mutex<Logs>]>,
}

impl MemoryEngine {
    pub fn new(local: Arc<Subscriptions>, bounds: HistoryBounds) -> Self {
        MemoryEngine {
            local,
            epoch: Arc::from(format!("m{:016x}", rand::random::<u64>())),
            bounds,
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
        let at = Instant::now();
        let mut logs = self.shard(channel);
        if !logs.contains_key(channel) {
            logs.insert(channel.into(), ChannelLog::default());
        }
        let Some(log) = logs.get_mut(channel) else {
            return self.position(0);
        };
        log.last += 1;
        let offset = log.last;
        let frame = Frame::text(encode(&ServerMessage::Message {
            channel,
            offset,
            data,
        }));
        self.local.deliver_channel(channel, &frame, at);
        log.append(Entry { offset, frame, at }, &self.bounds);
        drop(logs);
        self.position(offset)
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
        MemoryEngine::new(Arc::new(Subscriptions::new()), bounds)
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
        let engine = MemoryEngine::new(Arc::new(Subscriptions::new()), bounds);
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
