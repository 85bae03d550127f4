//! A connection's bounded send queue, shared between the delivery path (which pushes frames)
//! and the connection task (which drains them into the socket). The queue allocates only when
//! a frame is waiting, so idle connections cost a few dozen bytes here.

use crate::frame::Frame;
use crate::metrics::metrics;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What to do when a connection's queue is full (`disconnect`: close with 1008; `drop-oldest`:
/// discard the oldest queued frame to make room).
pub use wsfleet_api::SlowConsumerPolicy;

/// A frame waiting to be written, with the time it was queued (for the latency metric).
pub struct Queued {
    pub frame: Frame,
    pub at: Instant,
}

/// The send queue of one connection.
pub struct Outbox {
    queue: Mutex<VecDeque<Queued>>,
    wake: Notify,
    /// Signalled once when the queue overflows under `disconnect`, so a connection stuck
    /// writing to a client that stopped reading gives up at once.
    overflow: Notify,
    overflowed: AtomicBool,
    capacity: u32,
    policy: SlowConsumerPolicy,
}

impl Outbox {
    pub fn new(capacity: usize, policy: SlowConsumerPolicy) -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            overflow: Notify::new(),
            overflowed: AtomicBool::new(false),
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            policy,
        }
    }

    /// Queues a frame for the connection, applying the slow-consumer policy when full.
    pub fn push(&self, frame: Frame, at: Instant) {
        if self.overflowed.load(Ordering::Relaxed) {
            metrics().dropped_slow_consumer.inc();
            return;
        }
        let mut queue = match self.queue.lock() {
            Ok(queue) => queue,
            Err(poisoned) => poisoned.into_inner(),
        };
        if queue.len() >= self.capacity as usize {
            match self.policy {
                SlowConsumerPolicy::DropOldest => {
                    queue.pop_front();
                    metrics().dropped_oldest.inc();
                }
                SlowConsumerPolicy::Disconnect => {
                    drop(queue);
                    self.overflowed.store(true, Ordering::Relaxed);
                    metrics().dropped_slow_consumer.inc();
                    self.overflow.notify_one();
                    self.wake.notify_one();
                    return;
                }
            }
        }
        queue.push_back(Queued { frame, at });
        let was_empty = queue.len() == 1;
        drop(queue);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Moves every queued frame into `batch`, releasing the queue's memory when it had grown.
    pub fn take_all(&self, batch: &mut Vec<Queued>) {
        let mut queue = match self.queue.lock() {
            Ok(queue) => queue,
            Err(poisoned) => poisoned.into_inner(),
        };
        batch.extend(queue.drain(..));
        if queue.capacity() > 64 {
            queue.shrink_to_fit();
        }
    }

    /// Resolves when frames were queued (or the queue overflowed) since the last call.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Makes the next `ready` resolve at once (the owner yielded with frames still queued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when the queue overflowed under the `disconnect` policy.
    pub async fn overflowed_signal(&self) {
        self.overflow.notified().await;
    }

    /// True once the queue overflowed under the `disconnect` policy.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(outbox: &Outbox) -> Vec<String> {
        let mut batch = Vec::new();
        outbox.take_all(&mut batch);
        batch
            .into_iter()
            .map(|q| q.frame.payload().to_owned())
            .collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let outbox = Outbox::new(2, SlowConsumerPolicy::DropOldest);
        for text in ["a", "b", "c"] {
            outbox.push(text.into(), Instant::now());
        }
        assert_eq!(frames(&outbox), ["b", "c"]);
        assert!(!outbox.overflowed());
    }

    #[test]
    fn disconnect_marks_overflow() {
        let outbox = Outbox::new(2, SlowConsumerPolicy::Disconnect);
        for text in ["a", "b", "c"] {
            outbox.push(text.into(), Instant::now());
        }
        assert!(outbox.overflowed());
        assert_eq!(frames(&outbox), ["a", "b"]);
    }
}
