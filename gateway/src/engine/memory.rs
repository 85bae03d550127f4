//! The in-process engine: one node, no backplane. Channel offsets live in memory and the epoch
//! is drawn at start-up, so a restart starts a new history generation (clients that resume
//! with an older epoch are told `recovered: false`).

use super::{EngineError, Position, Subscribed};
use crate::protocol::{ServerMessage, Since, encode};
use crate::subscriptions::Subscriptions;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

const SHARDS: usize = 32;

/// Last assigned offset per channel, for one shard of channel names.
type Offsets = HashMap<Box<str>, u64>;

pub struct MemoryEngine {
    local: Arc<Subscriptions>,
    epoch: Arc<str>,
    hasher: RandomState,
    /// Last assigned offset per channel. A shard's lock is held while a message is delivered
    /// so that subscribers see offsets in order.
    offsets: Box<[Mutex<Offsets>]>,
}

impl MemoryEngine {
    pub fn new(local: Arc<Subscriptions>) -> Self {
        MemoryEngine {
            local,
            epoch: Arc::from(format!("m{:016x}", rand::random::<u64>())),
            hasher: RandomState::new(),
            offsets: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    pub fn local(&self) -> &Subscriptions {
        &self.local
    }

    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, Offsets> {
        let index = self.hasher.hash_one(channel) as usize % SHARDS;
        self.offsets[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn position(&self, offset: u64) -> Position {
        Position {
            offset,
            epoch: Arc::clone(&self.epoch),
        }
    }

    /// Where a channel stands for a new subscriber. Without stored history, a resume counts
    /// as recovered only when the client missed nothing.
    pub fn subscribed(&self, channel: &str, since: Option<&Since>) -> Subscribed {
        let offset = self.shard(channel).get(channel).copied().unwrap_or(0);
        let recovered = since.map(|s| *s.epoch == *self.epoch && s.offset == offset);
        Subscribed {
            position: self.position(offset),
            recovered,
        }
    }

    pub fn publish(&self, channel: &str, data: &RawValue) -> Position {
        let at = Instant::now();
        let mut offsets = self.shard(channel);
        let offset = match offsets.get_mut(channel) {
            Some(offset) => {
                *offset += 1;
                *offset
            }
            None => {
                offsets.insert(channel.into(), 1);
                1
            }
        };
        let frame = Utf8Bytes::from(encode(&ServerMessage::Message {
            channel,
            offset,
            data,
        }));
        self.local.deliver_channel(channel, &frame, at);
        drop(offsets);
        self.position(offset)
    }

    pub fn send(&self, from: &str, to: &str, data: &RawValue) -> Result<(), EngineError> {
        let frame = Utf8Bytes::from(encode(&ServerMessage::Direct { from, data }));
        match self.local.deliver_client(to, &frame, Instant::now()) {
            0 => Err(EngineError::ClientNotFound(to.to_owned())),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Outbox, SlowConsumerPolicy};

    #[test]
    fn offsets_grow_per_channel_and_reach_subscribers() {
        let local = Arc::new(Subscriptions::new());
        let engine = MemoryEngine::new(Arc::clone(&local));
        let outbox = Arc::new(Outbox::new(8, SlowConsumerPolicy::Disconnect));
        local.subscribe("a", 1, &outbox);
        let data = RawValue::from_string("1".into()).unwrap();
        assert_eq!(engine.publish("a", &data).offset, 1);
        assert_eq!(engine.publish("a", &data).offset, 2);
        assert_eq!(engine.publish("b", &data).offset, 1);
        let mut batch = Vec::new();
        outbox.take_all(&mut batch);
        let texts: Vec<&str> = batch.iter().map(|q| q.frame.as_str()).collect();
        assert_eq!(
            texts,
            [
                r#"{"op":"message","channel":"a","offset":1,"data":1}"#,
                r#"{"op":"message","channel":"a","offset":2,"data":1}"#
            ]
        );
        let since = Since {
            offset: 2,
            epoch: engine.epoch.to_string(),
        };
        assert_eq!(engine.subscribed("a", Some(&since)).recovered, Some(true));
        let stale = Since {
            offset: 1,
            epoch: engine.epoch.to_string(),
        };
        assert_eq!(engine.subscribed("a", Some(&stale)).recovered, Some(false));
    }

    #[test]
    fn send_to_unknown_client_is_not_found() {
        let engine = MemoryEngine::new(Arc::new(Subscriptions::new()));
        let data = RawValue::from_string("{}".into()).unwrap();
        assert!(matches!(
            engine.send("a", "nobody", &data),
            Err(EngineError::ClientNotFound(_))
        ));
    }
}
