//! Counters about the backplane's health that a gateway exports as metrics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of the counters (monotonic since start, except the last probe round trip).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Why the last attempt to connect failed, while the backplane is not up (e.g. a TLS
    /// certificate Redis presented that the configured CA does not sign).
    pub last_error: Option<String>,
}

#[derive(Default)]
pub(crate) struct Counters {
    links_established: AtomicU64,
    links_lost: AtomicU64,
    probe_failures: AtomicU64,
    last_probe_rtt_micros: AtomicU64,
    malformed_messages: AtomicU64,
    caught_up_messages: AtomicU64,
    last_error: Mutex<Option<String>>,
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

    /// Records why connecting failed; returns true when the reason differs from the last one
    /// (worth a warning rather than a debug line).
    pub fn connect_failed(&self, error: &str) -> bool {
        let Ok(mut last) = self.last_error.lock() else {
            return false;
        };
        let new = last.as_deref() != Some(error);
        *last = Some(error.to_owned());
        new
    }

    /// The backplane is up: no error to report.
    pub fn connected(&self) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
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
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}
