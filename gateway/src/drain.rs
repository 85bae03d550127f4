//! The node's drain: the lifecycle state machine (serving → draining → drained, and back to
//! serving on cancel) and the reconnect schedule that spreads a draining node's clients over
//! the window without bursts. Connections watch the [`Phase`]; [`supervise`] ends the drain
//! when the node is empty or at its deadline.

use rand::Rng;
use rand::seq::SliceRandom;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;
pub use wsfleet_api::{DrainRequest, NodeState};

/// How often the supervisor looks at the connection count.
const SUPERVISE_TICK: Duration = Duration::from_millis(100);
/// After the deadline, how long closing connections get to finish before the drain ends
/// regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// One drain: its parameters and the reconnect delays still to hand out.
#[derive(Debug)]
pub struct Drain {
    pub reason: Arc<str>,
    pub window: Duration,
    pub deadline: Instant,
    pub deadline_unix_ms: u64,
    /// Reconnect delays in milliseconds, one per connection present at the start, in random
    /// order; the k-th connection to learn of the drain takes the k-th.
    schedule: Box<[u64]>,
    claimed: AtomicUsize,
}

impl Drain {
    /// A drain as `request` (already checked) asks for; with a `count`, a partial drain whose
    /// schedule spreads just that many connections over the window.
    fn new(request: &DrainRequest, connections: usize) -> Drain {
        let connections = request.count.map_or(connections, |count| {
            usize::try_from(count)
                .unwrap_or(usize::MAX)
                .min(connections)
        });
        let window = Duration::from_secs(request.window_seconds);
        let deadline = Duration::from_secs(request.deadline_seconds);
        let window_ms = duration_ms(window);
        let now_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_ms)
            .unwrap_or(0);
        Drain {
            reason: Arc::from(request.reason()),
            window,
            deadline: Instant::now() + deadline,
            deadline_unix_ms: now_unix_ms.saturating_add(duration_ms(deadline)),
            schedule: stratified(connections, window_ms, &mut rand::rng()).into(),
            claimed: AtomicUsize::new(0),
        }
    }

    /// The reconnect delay for the next connection of a partial drain, while there are slots
    /// left; `None` once `count` connections were told.
    pub fn claim_slot(&self) -> Option<Duration> {
        let k = self.claimed.fetch_add(1, Ordering::Relaxed);
        let ms = *self.schedule.get(k)?;
        Some(Duration::from_millis(ms))
    }

    /// The reconnect delay for the next connection to learn of this drain. Connections beyond
    /// the ones counted at the start (upgrades that raced the drain) get a plain uniform draw.
    pub fn claim(&self) -> Duration {
        self.claim_slot().unwrap_or_else(|| {
            Duration::from_millis(rand::rng().random_range(0..duration_ms(self.window).max(1)))
        })
    }
}

/// The reconnect delays (ms) for `n` connections over `window_ms`, by stratified full jitter:
/// the window is cut into `n` equal slices, the i-th delay is uniform inside the i-th slice,
/// and the delays are shuffled so which connection gets which slice is random. Each delay is
/// still uniform over the window, but any one-second interval holds the even rate ± 1.
pub fn stratified(n: usize, window_ms: u64, rng: &mut impl Rng) -> Vec<u64> {
    let slice = window_ms as f64 / n.max(1) as f64;
    let last = window_ms.saturating_sub(1);
    let mut delays: Vec<u64> = (0..n)
        .map(|i| {
            let at = (i as f64 + rng.random::<f64>()) * slice;
            (at as u64).min(last)
        })
        .collect();
    delays.shuffle(rng);
    delays
}

/// Where the node is in its life, with the drain it is in.
#[derive(Debug, Clone)]
pub enum Phase {
    Serving,
    /// Serving, while a partial drain moves some of the connections elsewhere (each of the
    /// first `count` connections to hear of it gets a slot in the schedule).
    Shedding(Arc<Drain>),
    /// Clients are being told to reconnect and closed at their times.
    Draining(Arc<Drain>),
    /// The deadline passed: every remaining connection closes now.
    Closing(Arc<Drain>),
    /// Empty (or given up on); the process exits.
    Drained(Arc<Drain>),
}

impl Phase {
    pub fn state(&self) -> NodeState {
        match self {
            Phase::Serving | Phase::Shedding(_) => NodeState::Serving,
            Phase::Draining(_) | Phase::Closing(_) => NodeState::Draining,
            Phase::Drained(_) => NodeState::Drained,
        }
    }

    /// The drain under way, full or partial.
    fn current(&self) -> Option<&Arc<Drain>> {
        match self {
            Phase::Serving => None,
            Phase::Shedding(d) | Phase::Draining(d) | Phase::Closing(d) | Phase::Drained(d) => {
                Some(d)
            }
        }
    }

    /// The full drain under way, if any (a partial drain is not one: the node serves on).
    pub fn drain(&self) -> Option<&Arc<Drain>> {
        match self {
            Phase::Shedding(_) => None,
            _ => self.current(),
        }
    }
}

/// What [`Lifecycle::begin`] did.
pub struct Begun {
    pub drain: Arc<Drain>,
    /// False when a drain was already under way (it is returned unchanged).
    pub started: bool,
}

/// Why a drain could not be cancelled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CancelError {
    #[error("the drain passed its deadline; remaining connections are being closed")]
    Closing,
    #[error("the drain has finished; the node is exiting")]
    Drained,
}

/// The node's phase, shared by the admin API, the listener and every connection.
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: watch::Sender::new(Phase::Serving),
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// A receiver for connections; it reports the phase current when it was made as seen.
    pub fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Starts a drain of `connections` connections, or returns the one under way (idempotent:
    /// a second request never reschedules). A request with a `count` starts a partial drain
    /// instead (also idempotent); a full drain supersedes a partial one, not the other way
    /// round.
    pub fn begin(&self, request: &DrainRequest, connections: usize) -> Begun {
        let mut begun = None;
        let partial = request.count.is_some();
        self.phase.send_if_modified(|phase| {
            // A full drain replaces a partial one; anything else under way stays.
            let replace = !partial && matches!(phase, Phase::Shedding(_));
            match phase.current() {
                Some(current) if !replace => {
                    begun = Some(Begun {
                        drain: Arc::clone(current),
                        started: false,
                    });
                    false
                }
                _ => {
                    let drain = Arc::new(Drain::new(request, connections));
                    *phase = if partial {
                        Phase::Shedding(Arc::clone(&drain))
                    } else {
                        Phase::Draining(Arc::clone(&drain))
                    };
                    begun = Some(Begun {
                        drain,
                        started: true,
                    });
                    true
                }
            }
        });
        begun.unwrap_or_else(|| unreachable!("send_if_modified runs the closure once"))
    }

    /// Cancels a drain: the node serves again. Connections already told to reconnect keep
    /// their time; the others stay. Cancelling when serving is a no-op.
    pub fn cancel(&self) -> Result<(), CancelError> {
        let mut result = Ok(());
        self.phase.send_if_modified(|phase| match phase {
            Phase::Serving => false,
            Phase::Draining(_) | Phase::Shedding(_) => {
                *phase = Phase::Serving;
                true
            }
            Phase::Closing(_) => {
                result = Err(CancelError::Closing);
                false
            }
            Phase::Drained(_) => {
                result = Err(CancelError::Drained);
                false
            }
        });
        result
    }

    /// Moves `drain` on to `next` only if it is still the current drain.
    fn advance(&self, drain: &Arc<Drain>, next: fn(Arc<Drain>) -> Phase) -> bool {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Draining(d) | Phase::Closing(d) if Arc::ptr_eq(d, drain) => {
                *phase = next(Arc::clone(d));
                true
            }
            _ => false,
        })
    }

    /// Resolves once the node is drained.
    pub async fn drained(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| matches!(p, Phase::Drained(_))).await;
    }

    /// Ends a partial drain once its window has passed: the node is plainly serving again
    /// (connections told to move still leave at their time).
    pub async fn end_shedding_after(&self, drain: &Arc<Drain>) {
        tokio::time::sleep(drain.window).await;
        self.phase.send_if_modified(|phase| match phase {
            Phase::Shedding(d) if Arc::ptr_eq(d, drain) => {
                *phase = Phase::Serving;
                true
            }
            _ => false,
        });
    }

    fn is_current(&self, drain: &Arc<Drain>) -> bool {
        matches!(&*self.phase.borrow(), Phase::Draining(d) | Phase::Closing(d) if Arc::ptr_eq(d, drain))
    }
}

/// Runs one drain to its end: drained once `connections()` is zero, or at the deadline closes
/// what remains and is drained once they are gone (or after a short grace). Returns early
/// when the drain is cancelled.
pub async fn supervise(lifecycle: &Lifecycle, drain: &Arc<Drain>, connections: impl Fn() -> usize) {
    loop {
        if !lifecycle.is_current(drain) {
            return;
        }
        if connections() == 0 {
            break;
        }
        if Instant::now() >= drain.deadline {
            tracing::warn!(
                remaining = connections(),
                "drain deadline reached; closing the remaining connections"
            );
            lifecycle.advance(drain, Phase::Closing);
            let gone_by = Instant::now() + CLOSE_GRACE;
            while connections() > 0 && Instant::now() < gone_by {
                tokio::time::sleep(SUPERVISE_TICK).await;
            }
            break;
        }
        tokio::time::sleep(SUPERVISE_TICK).await;
    }
    lifecycle.advance(drain, Phase::Drained);
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Delays per whole second of the window.
    fn per_second(delays: &[u64], window_ms: u64) -> Vec<usize> {
        let mut buckets = vec![0; window_ms.div_ceil(1000) as usize];
        for ms in delays {
            buckets[(*ms / 1000) as usize] += 1;
        }
        buckets
    }

    #[test]
    fn stratified_schedule_is_smooth_and_inside_the_window() {
        for (n, window_secs, seed) in [(1_000, 4, 1), (15_000, 30, 2), (100_000, 60, 3), (7, 3, 4)]
        {
            let window_ms = window_secs * 1000;
            let delays = stratified(n, window_ms, &mut StdRng::seed_from_u64(seed));
            assert_eq!(delays.len(), n);
            assert!(delays.iter().all(|ms| *ms < window_ms));
            let even = n as f64 / window_secs as f64;
            for (second, count) in per_second(&delays, window_ms).into_iter().enumerate() {
                // Whole slices inside the second, plus at most one partial slice at each edge.
                assert!(
                    (count as f64) <= even.ceil() + 1.0 && (count as f64) >= even.floor() - 1.0,
                    "n={n} second {second}: {count} reconnects, even rate {even}"
                );
            }
        }
    }

    #[test]
    fn stratified_schedule_stays_under_one_and_a_half_times_the_even_rate() {
        let (n, window_secs) = (1_000u64, 5u64);
        let delays = stratified(
            n as usize,
            window_secs * 1000,
            &mut StdRng::seed_from_u64(9),
        );
        let peak = per_second(&delays, window_secs * 1000).into_iter().max();
        assert!(peak.is_some_and(|p| p as f64 <= 1.5 * (n / window_secs) as f64));
    }

    #[test]
    fn each_delay_is_uniform_over_the_window() {
        // The shuffle makes a given connection's slice random: over many drains, the first
        // connection's delay lands in each tenth of the window about equally often.
        let mut rng = StdRng::seed_from_u64(5);
        let mut tenths = [0usize; 10];
        for _ in 0..5_000 {
            let first = stratified(50, 10_000, &mut rng)[0];
            tenths[(first / 1000) as usize] += 1;
        }
        assert!(tenths.iter().all(|c| (400..=600).contains(c)), "{tenths:?}");
    }

    /// A request as the admin API would pass it on, checked.
    fn request(window_seconds: u64, deadline_seconds: u64, reason: Option<&str>) -> DrainRequest {
        let request = DrainRequest {
            window_seconds,
            deadline_seconds,
            reason: reason.map(str::to_owned),
            count: None,
        };
        request.check().expect("a valid request");
        request
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_drain_hands_out_count_slots_and_ends_after_its_window() {
        let lifecycle = Lifecycle::default();
        let partial = DrainRequest {
            count: Some(3),
            ..request(2, 2, Some("rebalance"))
        };
        let begun = lifecycle.begin(&partial, 10);
        assert!(begun.started);
        assert_eq!(
            lifecycle.phase().state(),
            NodeState::Serving,
            "the node serves on"
        );
        assert!(lifecycle.phase().drain().is_none(), "not a full drain");
        let slots: Vec<_> = (0..5).map(|_| begun.drain.claim_slot()).collect();
        assert!(
            slots[..3]
                .iter()
                .all(|s| s.is_some_and(|d| d < Duration::from_secs(2)))
        );
        assert_eq!(slots[3..], [None, None], "only count connections move");
        assert!(
            !lifecycle.begin(&partial, 10).started,
            "a repeat starts nothing"
        );

        // Its window over, the node is plainly serving; a partial drain can start again.
        lifecycle.end_shedding_after(&begun.drain).await;
        assert!(matches!(lifecycle.phase(), Phase::Serving));
        let second = lifecycle.begin(&partial, 10);
        assert!(second.started);

        // A full drain supersedes a partial one; a partial one does not touch a full one.
        let full = lifecycle.begin(&request(2, 2, None), 10);
        assert!(full.started);
        assert_eq!(lifecycle.phase().state(), NodeState::Draining);
        assert!(!lifecycle.begin(&partial, 10).started);
        assert_eq!(lifecycle.cancel(), Ok(()));
        // A partial drain asks for no more than there are connections.
        let few = lifecycle.begin(&partial, 1).drain;
        assert!(few.claim_slot().is_some() && few.claim_slot().is_none());
    }

    #[test]
    fn claims_follow_the_schedule_then_fall_back_to_uniform() {
        let request = request(2, 2, None);
        let drain = Drain::new(&request, 3);
        let mut first: Vec<u64> = (0..3).map(|_| duration_ms(drain.claim())).collect();
        first.sort_unstable();
        assert!(first[0] < 667 && (666..1334).contains(&first[1]) && first[2] >= 1333);
        assert!(drain.claim() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn begin_is_idempotent_and_cancel_returns_to_serving() {
        let lifecycle = Lifecycle::default();
        let first = lifecycle.begin(&request(10, 20, Some("upgrade")), 5);
        assert!(first.started);
        let again = lifecycle.begin(&request(1, 1, None), 9);
        assert!(!again.started && Arc::ptr_eq(&first.drain, &again.drain));
        assert_eq!(lifecycle.phase().state().as_str(), "draining");
        assert_eq!(lifecycle.cancel(), Ok(()));
        assert_eq!(lifecycle.phase().state().as_str(), "serving");
        assert_eq!(lifecycle.cancel(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn supervise_ends_when_empty_or_at_the_deadline() {
        let lifecycle = Lifecycle::default();
        let request = request(1, 1, None);
        let drain = lifecycle.begin(&request, 0).drain;
        supervise(&lifecycle, &drain, || 0).await;
        assert_eq!(lifecycle.phase().state().as_str(), "drained");
        assert_eq!(lifecycle.cancel(), Err(CancelError::Drained));

        // Connections that never leave: closed at the deadline, drained after the grace.
        let lifecycle = Lifecycle::default();
        let drain = lifecycle.begin(&request, 3).drain;
        let rx = lifecycle.watch();
        supervise(&lifecycle, &drain, || 3).await;
        assert!(Instant::now() >= drain.deadline + CLOSE_GRACE);
        assert!(matches!(lifecycle.phase(), Phase::Drained(_)));
        assert!(rx.has_changed().unwrap_or(false));

        // A cancelled drain's supervisor returns without finishing anything.
        let lifecycle = Lifecycle::default();
        let drain = lifecycle.begin(&request, 3).drain;
        lifecycle.cancel().unwrap();
        supervise(&lifecycle, &drain, || 3).await;
        assert_eq!(lifecycle.phase().state().as_str(), "serving");
    }
}
