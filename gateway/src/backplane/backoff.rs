//! Capped exponential backoff with full jitter, so that a fleet of nodes that lost Redis at the
//! same moment does not reconnect in lockstep.

use std::time::Duration;

use rand::Rng;

pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// A delay drawn uniformly from `0..=min(cap, base * 2^attempt)`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(5));
        }
        assert_eq!(backoff.attempt, 100);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
