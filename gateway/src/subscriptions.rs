//! The node's local delivery index: which local connections listen on each channel, and which
//! local connections belong to each client id. Sharded so that subscribing, delivering and
//! disconnecting on different keys do not contend on one lock.

use crate::frame::Frame;
use crate::outbox::Outbox;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;

/// Identifies one local connection for its whole life.
pub type ConnId = u64;

const SHARDS: usize = 64;

type Members = HashMap<ConnId, Arc<Outbox>>;
type Shard = HashMap<Arc<str>, Members>;

/// A sharded map from a key (channel name or client id) to the local connections under it.
struct Index {
    hasher: RandomState,
    shards: Box<[RwLock<Shard>]>,
}

impl Index {
    fn new() -> Self {
        Index {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        let hash = self.hasher.hash_one(key) as usize;
        &self.shards[hash % SHARDS]
    }

    fn read(&self, key: &str) -> RwLockReadGuard<'_, Shard> {
        self.shard(key).read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, key: &str) -> RwLockWriteGuard<'_, Shard> {
        self.shard(key).write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a member; true when it is the key's first local member.
    fn add(&self, key: &str, conn: ConnId, outbox: &Arc<Outbox>) -> bool {
        let mut shard = self.write(key);
        match shard.get_mut(key) {
            Some(members) => {
                members.insert(conn, Arc::clone(outbox));
                false
            }
            None => {
                let mut members = Members::with_capacity(1);
                members.insert(conn, Arc::clone(outbox));
                shard.insert(Arc::from(key), members);
                true
            }
        }
    }

    /// Removes a member; true when the key had no local member left afterwards.
    fn remove(&self, key: &str, conn: ConnId) -> bool {
        let mut shard = self.write(key);
        let Some(members) = shard.get_mut(key) else {
            return false;
        };
        if members.remove(&conn).is_none() {
            return false;
        }
        if members.is_empty() {
            shard.remove(key);
            return true;
        }
        false
    }

    fn contains(&self, key: &str, conn: ConnId) -> bool {
        self.read(key)
            .get(key)
            .is_some_and(|members| members.contains_key(&conn))
    }

    /// Queues one shared frame for every member of `key`; returns how many got it.
    fn deliver(&self, key: &str, frame: &Frame, at: Instant) -> usize {
        let shard = self.read(key);
        let Some(members) = shard.get(key) else {
            return 0;
        };
        for outbox in members.values() {
            outbox.push(frame.clone(), at);
        }
        members.len()
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// Local channel subscriptions and local client ids.
pub struct Subscriptions {
    channels: Index,
    clients: Index,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self::new()
    }
}

impl Subscriptions {
    pub fn new() -> Self {
        Subscriptions {
            channels: Index::new(),
            clients: Index::new(),
        }
    }

    /// Subscribes a connection; true when it is the channel's first local subscriber (the
    /// engine then starts listening on the backplane).
    pub fn subscribe(&self, channel: &str, conn: ConnId, outbox: &Arc<Outbox>) -> bool {
        self.channels.add(channel, conn, outbox)
    }

    /// Unsubscribes a connection; true when the channel has no local subscriber left.
    pub fn unsubscribe(&self, channel: &str, conn: ConnId) -> bool {
        self.channels.remove(channel, conn)
    }

    /// Whether a connection is subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str, conn: ConnId) -> bool {
        self.channels.contains(channel, conn)
    }

    /// Queues a frame for every local subscriber of `channel`.
    pub fn deliver_channel(&self, channel: &str, frame: &Frame, at: Instant) -> usize {
        self.channels.deliver(channel, frame, at)
    }

    /// Records a local connection of a client; true when it is the client's first here.
    pub fn add_client(&self, client_id: &str, conn: ConnId, outbox: &Arc<Outbox>) -> bool {
        self.clients.add(client_id, conn, outbox)
    }

    /// Forgets a local connection of a client; true when the client has none left here.
    pub fn remove_client(&self, client_id: &str, conn: ConnId) -> bool {
        self.clients.remove(client_id, conn)
    }

    /// Queues a frame for every local connection of a client.
    pub fn deliver_client(&self, client_id: &str, frame: &Frame, at: Instant) -> usize {
        self.clients.deliver(client_id, frame, at)
    }

    /// Number of channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::SlowConsumerPolicy;

    #[test]
    fn reference_counts_channels() {
        let subs = Subscriptions::new();
        let a = Arc::new(Outbox::new(8, SlowConsumerPolicy::Disconnect));
        let b = Arc::new(Outbox::new(8, SlowConsumerPolicy::Disconnect));
        assert!(subs.subscribe("news", 1, &a));
        assert!(!subs.subscribe("news", 2, &b));
        assert!(!subs.subscribe("news", 2, &b));
        assert_eq!(subs.deliver_channel("news", &"x".into(), Instant::now()), 2);
        assert!(!subs.unsubscribe("news", 1));
        assert!(!subs.unsubscribe("news", 1));
        assert!(subs.unsubscribe("news", 2));
        assert_eq!(subs.channel_count(), 0);
        assert_eq!(subs.deliver_channel("news", &"x".into(), Instant::now()), 0);
    }
}
