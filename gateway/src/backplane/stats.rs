//! Counters about the backplane's health that a gateway exports as metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of the counters (monotonic since start, except the last probe round trip).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackplaneStats {
    /// Subscription links established (the first connect included).
    pub links_established: u64,
    /// Links torn down: connection lost, probe failed, or a subscription dropped by Redis.
    pub links_lost: u64,
    /// Probes that did not come back in time.
    pub probe_failures: u64,
    /// Round trip of the last successful probe.
    pub last_probe_rtt: Duration,
    /// Messages on backplane topics that could not be parsed (dropped).
    pub malformed_messages: u64,
    /// Channel messages delivered from history to fill a gap (after a reconnect or a jump).
    pub caught_up_messages: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    links_established: AtomicU64,
    links_lost: AtomicU64,
    probe_failures: AtomicU64,
    last_probe_rtt_micros: AtomicU64,
    malformed_messages: AtomicU64,
    caught_up_messages: AtomicU64,
}

impl Counters {
    pub fn link_established(&self) {
        self.links_established.fetch_add(1, Ordering::Relaxed);
    }

    pub fn link_lost(&self) {
        self.links_lost.fetch_add(1, Ordering::Relaxed);
    }

    pub fn probe_failed(&self) {
        self.probe_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn probe_returned(&self, rtt: Duration) {
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.last_probe_rtt_micros.store(micros, Ordering::Relaxed);
    }

    pub fn malformed(&self) {
        self.malformed_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub fn caught_up(&self, messages: u64) {
        self.caught_up_messages
            .fetch_add(messages, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BackplaneStats {
        BackplaneStats {
            links_established: self.links_established.load(Ordering::Relaxed),
            links_lost: self.links_lost.load(Ordering::Relaxed),
            probe_failures: self.probe_failures.load(Ordering::Relaxed),
            last_probe_rtt: Duration::from_micros(
                self.last_probe_rtt_micros.load(Ordering::Relaxed),
            ),
            malformed_messages: self.malformed_messages.load(Ordering::Relaxed),
            caught_up_messages: self.caught_up_messages.load(Ordering::Relaxed),
        }
    }
}
