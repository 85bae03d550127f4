//! Channel following: turns the live messages of the channels this node subscribes to into a
//! delivery stream that is, per channel, ordered, duplicate-free and gap-filled from history —
//! including after reconnects and after Redis lost its data (new epoch).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::warn;

use super::Delivery;
use super::channel::{self, Recovery};
use super::cursors::{Cursors, Verdict};
use super::envelope::LiveMessage;
use super::keys::Keys;
use super::links::Commands;
use super::stats::Counters;

/// Upper bound for one history read.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// History reads in flight at once when catching up after a reconnect.
const CATCH_UP_CONCURRENCY: usize = 64;

pub(crate) struct Follower {
    cursors: Cursors,
    commands: Arc<Commands>,
    keys: Keys,
    deliveries: mpsc::UnboundedSender<Delivery>,
    counters: Arc<Counters>,
}

impl Follower {
    pub fn new(
        commands: Arc<Commands>,
        keys: Keys,
        deliveries: mpsc::UnboundedSender<Delivery>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            cursors: Cursors::default(),
            commands,
            keys,
            deliveries,
            counters,
        }
    }

    /// Stops following a channel (its last local subscriber left).
    pub fn forget(&mut self, channel: &str) {
        self.cursors.forget(channel);
    }

    pub async fn on_message(&mut self, channel: String, message: LiveMessage) {
        match self.cursors.check(&channel, message.offset, &message.epoch) {
            Verdict::Duplicate => return,
            Verdict::Gap { after } => {
                self.catch_up(&channel, after, &message.epoch, Some(message.offset))
                    .await;
            }
            Verdict::Deliver => {}
        }
        self.deliver(channel, message.offset, message.epoch, message.data);
    }

    fn deliver(&mut self, channel: String, offset: u64, epoch: String, data: Bytes) {
        self.cursors.advance(&channel, offset, &epoch);
        let _ = self.deliveries.send(Delivery::Channel {
            channel,
            offset,
            epoch,
            data,
        });
    }

    /// Delivers what history retains of `channel` after offset `after` (and before `before`,
    /// when a live message is waiting). If the channel's epoch changed meanwhile (Redis lost
    /// its data), everything in the new epoch is new to this node and is delivered instead.
    async fn catch_up(&mut self, channel: &str, after: u64, epoch: &str, before: Option<u64>) {
        let Some(mut recovery) = self.read_history(channel, after, epoch).await else {
            return;
        };
        let mut after = after;
        if *recovery.position.epoch != *epoch {
            let new_epoch = recovery.position.epoch.to_string();
            if new_epoch.is_empty() {
                // Nothing published since the loss; the next live message starts over.
                self.cursors.forget(channel);
                return;
            }
            let Some(restarted) = self.read_history(channel, 0, &new_epoch).await else {
                return;
            };
            (after, recovery) = (0, restarted);
        }
        self.deliver_recovered(channel, after, before, recovery);
    }

    /// Catches every followed channel up after a reconnect. The history reads run
    /// concurrently (they pipeline on the multiplexed connection), so thousands of channels
    /// cost a few round trips rather than one each.
    pub async fn catch_up_all(&mut self) {
        let mut reads = JoinSet::new();
        let mut results = Vec::new();
        for (channel, after, epoch) in self.cursors.snapshot() {
            if reads.len() >= CATCH_UP_CONCURRENCY
                && let Some(Ok(done)) = reads.join_next().await
            {
                results.push(done);
            }
            let (commands, keys) = (self.commands.clone(), self.keys.clone());
            reads.spawn(async move {
                let read = async {
                    let mut conn = commands.get()?;
                    channel::history(&mut conn, &keys, &channel, after, &epoch).await
                };
                let recovery = timeout(READ_TIMEOUT, read).await.ok().and_then(Result::ok);
                (channel, after, epoch, recovery)
            });
        }
        while let Some(joined) = reads.join_next().await {
            if let Ok(done) = joined {
                results.push(done);
            }
        }
        for (channel, after, epoch, recovery) in results {
            match recovery {
                Some(recovery) if *recovery.position.epoch == *epoch => {
                    self.deliver_recovered(&channel, after, None, recovery);
                }
                // Rare: the epoch changed, or the read failed; take the careful path.
                _ => self.catch_up(&channel, after, &epoch, None).await,
            }
        }
    }

    fn deliver_recovered(
        &mut self,
        channel: &str,
        after: u64,
        before: Option<u64>,
        recovery: Recovery,
    ) {
        if !recovery.recovered {
            warn!(
                channel,
                after, "history no longer holds every missed message"
            );
        }
        let epoch = recovery.position.epoch.to_string();
        for (offset, data) in recovery.messages {
            if offset > after && before.is_none_or(|before| offset < before) {
                self.counters.caught_up(1);
                self.deliver(channel.to_string(), offset, epoch.clone(), data);
            }
        }
    }

    async fn read_history(&self, channel: &str, after: u64, epoch: &str) -> Option<Recovery> {
        let read = async {
            let mut conn = self.commands.get()?;
            channel::history(&mut conn, &self.keys, channel, after, epoch).await
        };
        match timeout(READ_TIMEOUT, read).await {
            Ok(Ok(recovery)) => Some(recovery),
            Ok(Err(error)) => {
                warn!(channel, %error, "history catch-up failed; offsets will jump");
                None
            }
            Err(_) => {
                warn!(channel, "history catch-up timed out; offsets will jump");
                None
            }
        }
    }
}
