//! Reconnect delays: capped exponential backoff with full jitter, so that clients which lost
//! their node at the same moment spread their reconnects instead of arriving together.

use rand::Rng;
use std::time::Duration;

/// Backoff settings: the first ceiling, and the cap no ceiling exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before reconnect attempt `attempt` (0-based):
    /// `min(cap, base * 2^attempt)`, saturating instead of overflowing.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A delay drawn uniformly from `[0, ceiling(attempt)]` ("full jitter").
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis().min(u64::MAX as u128) as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = backoff();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(6), Duration::from_millis(6400));
        assert_eq!(b.ceiling(7), Duration::from_secs(10));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn delays_stay_within_bounds_and_use_the_whole_range() {
        let b = backoff();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in [0, 3, 40] {
            let ceiling = b.ceiling(attempt);
            let delays: Vec<Duration> = (0..2000).map(|_| b.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: draws reach both the bottom and the top tenth of the range.
            assert!(
                delays.iter().any(|d| *d < ceiling / 10),
                "attempt {attempt}"
            );
            assert!(
                delays.iter().any(|d| *d > ceiling * 9 / 10),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn zero_base_means_no_wait() {
        let b = Backoff {
            base: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.delay(5, &mut rng), Duration::ZERO);
    }
}
