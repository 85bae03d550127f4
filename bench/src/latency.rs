//! Latency recording: an HDR histogram in microseconds, its summary (p50/p90/p99/max), and a
//! compact form that child processes send to their parent for merging.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded exactly; larger values are clamped (one minute is far beyond any
/// scenario's timeout).
const MAX_US: u64 = 60_000_000;

pub struct Latency {
    histogram: Histogram<u64>,
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        // Three significant digits over 1 µs ..= 60 s: constant, valid bounds.
        let histogram = Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds");
        Latency { histogram }
    }

    pub fn record(&mut self, micros: u64) {
        self.histogram.saturating_record(micros.clamp(1, MAX_US));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail; clamp-record as a fallback anyway.
        if self.histogram.add(&other.histogram).is_err() {
            for v in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let h = &self.histogram;
        Summary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }

    /// `(value, count)` pairs of every recorded bucket, for a parent process to merge.
    pub fn to_buckets(&self) -> Vec<(u64, u64)> {
        self.histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    pub fn from_buckets(buckets: &[(u64, u64)]) -> Latency {
        let mut latency = Latency::new();
        for &(value, count) in buckets {
            latency
                .histogram
                .saturating_record_n(value.clamp(1, MAX_US), count);
        }
        latency
    }
}

/// Formats microseconds for people: `850µs`, `12.3ms`, `1.20s`.
pub fn human(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge_through_buckets() {
        let mut a = Latency::new();
        for us in 1..=1000 {
            a.record(us);
        }
        let s = a.summary();
        assert_eq!(s.count, 1000);
        assert!((495..=505).contains(&s.p50_us), "{s:?}");
        assert!((985..=1000).contains(&s.p99_us), "{s:?}");
        let mut b = Latency::from_buckets(&a.to_buckets());
        b.merge(&a);
        assert_eq!(b.summary().count, 2000);
        assert_eq!(b.summary().p50_us, s.p50_us);
    }

    #[test]
    fn clamps_out_of_range_values() {
        let mut l = Latency::new();
        l.record(0);
        l.record(u64::MAX);
        assert_eq!(l.summary().count, 2);
        assert!(l.summary().max_us >= MAX_US);
    }

    #[test]
    fn human_units() {
        assert_eq!(human(850), "850µs");
        assert_eq!(human(12_340), "12.3ms");
        assert_eq!(human(1_200_000), "1.20s");
    }
}
