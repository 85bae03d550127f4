//! Liveness: whether this process is still making progress, for `/healthz` (the kubelet's
//! liveness probe). Two loops must keep moving: the leader-election rounds (every third of the
//! lease) and each reconcile, which must finish within the stall bound. A loop stuck on a call
//! that never returns (kube's client sets no read timeout, so a half-dead connection to the API
//! server waits forever) turns `/healthz` into a 503 naming what is stuck, and the kubelet
//! restarts the process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default stall bound: far above a healthy reconcile (seconds) and election round.
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);

/// Progress marks shared by the election loop, the reconciles and `/healthz`.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    stall: Duration,
    /// Milliseconds since `started` at the end of the last election round; `u64::MAX` when no
    /// election runs (a single replica without leader election).
    last_round: AtomicU64,
    next_reconcile: AtomicU64,
    /// Reconciles under way, by number, with when each began.
    in_flight: Mutex<BTreeMap<u64, Instant>>,
}

impl Health {
    /// Progress marks that report a stall after `stall` without progress.
    pub fn new(stall: Duration) -> Health {
        Health {
            inner: Arc::new(Inner {
                started: Instant::now(),
                stall,
                last_round: AtomicU64::new(u64::MAX),
                next_reconcile: AtomicU64::new(0),
                in_flight: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Marks the end of a leader-election round (won, lost or failed: the loop moved).
    pub fn round_done(&self) {
        let elapsed =
            u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.inner.last_round.store(elapsed, Ordering::Relaxed);
    }

    /// Marks a reconcile as under way until the returned guard drops (finished or cancelled).
    pub fn reconcile_started(&self) -> InFlight {
        let id = self.inner.next_reconcile.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut in_flight) = self.inner.in_flight.lock() {
            in_flight.insert(id, Instant::now());
        }
        InFlight {
            health: self.clone(),
            id,
        }
    }

    /// `Ok` while both loops move; otherwise what is stuck and for how long.
    pub fn check(&self) -> Result<(), String> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), String> {
        let stall = self.inner.stall;
        let last_round = self.inner.last_round.load(Ordering::Relaxed);
        if last_round != u64::MAX {
            let since = now
                .saturating_duration_since(self.inner.started + Duration::from_millis(last_round));
            if since > stall {
                return Err(format!(
                    "no leader-election round has finished for {}s (bound {}s)",
                    since.as_secs(),
                    stall.as_secs()
                ));
            }
        }
        let oldest = self
            .inner
            .in_flight
            .lock()
            .map_err(|_| "reconcile bookkeeping poisoned".to_string())?
            .values()
            .min()
            .copied();
        if let Some(began) = oldest {
            let running = now.saturating_duration_since(began);
            if running > stall {
                return Err(format!(
                    "a reconcile has been running for {}s (bound {}s)",
                    running.as_secs(),
                    stall.as_secs()
                ));
            }
        }
        Ok(())
    }
}

/// A reconcile under way; dropping it marks the reconcile finished.
pub struct InFlight {
    health: Health,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.health.inner.in_flight.lock() {
            in_flight.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_until_a_loop_stalls() {
        let health = Health::new(Duration::from_secs(10));
        let start = health.inner.started;
        let at = |s: u64| start + Duration::from_secs(s);
        // No election yet (single replica): only reconciles count.
        assert_eq!(health.check_at(at(100)), Ok(()));

        health.round_done();
        assert_eq!(health.check_at(at(5)), Ok(()));
        let stalled = health.check_at(at(11)).expect_err("rounds stopped");
        assert!(stalled.contains("leader-election round"), "{stalled}");
        health.round_done();

        // Reconciles on their own (no election running).
        let health = Health::new(Duration::from_secs(10));
        let at = |s: u64| health.inner.started + Duration::from_secs(s);
        let reconcile = health.reconcile_started();
        assert_eq!(health.check_at(at(9)), Ok(()));
        let stuck = health.check_at(at(30)).expect_err("a reconcile is stuck");
        assert!(stuck.contains("a reconcile has been running"), "{stuck}");
        drop(reconcile);
        assert!(health.inner.in_flight.lock().expect("lock").is_empty());
    }
}
