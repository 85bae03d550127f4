//! Stamped message streams, shared by the scenarios that count loss: the publisher side (one
//! message per tick, each `{"seq": n, "ts_us": <send time>}`) and the subscriber side
//! (`SeqTracker`: which sequence numbers arrived, duplicates, reordering, and loss against the
//! publishes the gateway acknowledged).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use wsfleet_client::Client;

/// Messages one run may publish; bounds the per-subscriber bookkeeping.
pub const MAX_MESSAGES: u64 = 5_000_000;

/// Order bookkeeping for one subscriber, by publish sequence number.
#[derive(Default)]
pub struct SeqTracker {
    seen: Vec<bool>,
    pub unique: u64,
    max_seen: Option<u64>,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) {
        let Ok(index) = usize::try_from(seq) else {
            return;
        };
        if seq >= MAX_MESSAGES {
            return;
        }
        if index >= self.seen.len() {
            self.seen.resize(index + 1, false);
        }
        if self.seen[index] {
            self.duplicated += 1;
            return;
        }
        self.seen[index] = true;
        self.unique += 1;
        if self.max_seen.is_some_and(|max| seq < max) {
            self.out_of_order += 1;
        }
        self.max_seen = Some(self.max_seen.map_or(seq, |max| max.max(seq)));
    }

    /// Acknowledged publishes this subscriber never received.
    pub fn lost(&self, acked: &[bool]) -> u64 {
        acked
            .iter()
            .enumerate()
            .filter(|(i, ok)| **ok && !self.seen.get(*i).copied().unwrap_or(false))
            .count() as u64
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The `(seq, ts_us)` a publisher put in a message.
pub fn stamp(data: &Value) -> Option<(u64, u64)> {
    Some((data.get("seq")?.as_u64()?, data.get("ts_us")?.as_u64()?))
}

/// Publishes `total` stamped messages at `rate`, in order, through the wsfleet client;
/// returns which were acknowledged. Every publish times out on its own (the client's request
/// timeout).
pub async fn publish(publisher: &Client, channel: &str, rate: f64, total: u64) -> Vec<bool> {
    publish_with(rate, total, |data| {
        publisher
            .publish(channel, data)
            .map(|result| result.is_ok())
    })
    .await
}

/// Like [`publish`], through any system's publish call: `send` gets each stamped message and
/// resolves to whether it was acknowledged. Used for the peers, which have no wsfleet client.
pub async fn publish_with<F, Fut>(rate: f64, total: u64, mut send: F) -> Vec<bool>
where
    F: FnMut(Value) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut acked = vec![false; total as usize];
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // Catch up after a stall so the run publishes `rate` on average, as a real source would.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = FuturesUnordered::new();
    for seq in 0..total {
        ticker.tick().await;
        let ack = send(json!({ "seq": seq, "ts_us": now_us() }));
        pending.push(ack.map(move |ok| (seq, ok)));
        while let Some(Some((seq, ok))) = pending.next().now_or_never() {
            acked[seq as usize] = ok;
        }
    }
    // Each adapter bounds its acks in time (HTTP timeout, ack timeout).
    while let Some((seq, ok)) = pending.next().await {
        acked[seq as usize] = ok;
    }
    acked
}

/// Waits for the subscribers' tasks to finish, telling them to stop (through `stop`) once
/// `settle` has passed; returns what they handed back and whether the settle time ran out.
pub async fn settle<T>(
    consumers: Vec<tokio::task::JoinHandle<T>>,
    settle: Duration,
    stop: tokio::sync::watch::Sender<bool>,
) -> (Vec<T>, bool) {
    let stop = std::sync::Arc::new(stop);
    let stopper = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(settle).await;
            stop.send_replace(true);
        }
    });
    let mut results = Vec::with_capacity(consumers.len());
    for consumer in consumers {
        if let Ok(result) = consumer.await {
            results.push(result);
        }
    }
    stopper.abort();
    let expired = *stop.borrow();
    (results, expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_loss_duplicates_and_reordering() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 3, 2, 3, 5] {
            t.record(seq);
        }
        assert_eq!(t.unique, 5);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.out_of_order, 1);
        // 4 was acknowledged and never arrived; 6 was not acknowledged so it is not lost.
        let acked = [true, true, true, true, true, true, false];
        assert_eq!(t.lost(&acked), 1);
    }

    #[test]
    fn stamps_are_read_from_data() {
        assert_eq!(stamp(&json!({"seq": 3, "ts_us": 99})), Some((3, 99)));
        assert_eq!(stamp(&json!({"seq": 3})), None);
        assert_eq!(stamp(&json!("x")), None);
    }

    #[test]
    fn huge_sequence_numbers_are_ignored() {
        let mut t = SeqTracker::default();
        t.record(u64::MAX);
        assert_eq!(t.unique, 0);
        assert!(t.seen.is_empty());
    }
}
