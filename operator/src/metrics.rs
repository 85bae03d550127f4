//! The operator's own Prometheus metrics: reconciles, failures by kind, reconcile duration, and
//! whether this replica holds the leader lease.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Metric handles, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
    pub leader: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounter::with_opts(Opts::new(
            "wsfleet_operator_reconciles_total",
            "Reconciles of WebSocketFleet objects started.",
        ))?;
        let failures = IntCounterVec::new(
            Opts::new(
                "wsfleet_operator_reconcile_errors_total",
                "Reconciles that failed, by kind of error.",
            ),
            &["error"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "wsfleet_operator_reconcile_duration_seconds",
                "Time taken by one reconcile.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let leader = IntGauge::with_opts(Opts::new(
            "wsfleet_operator_leader",
            "1 while this replica holds the leader lease.",
        ))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            failures,
            duration,
            leader,
        })
    }

    /// Counts a reconcile and times it until the returned guard is dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            histogram: self.duration.clone(),
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, kind: &str) {
        self.failures.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which registration rules out.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let metrics = Metrics::new().expect("metrics");
        drop(metrics.reconcile_started());
        metrics.reconcile_failed("kube");
        let text = metrics.render();
        assert!(
            text.contains("wsfleet_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(text.contains("wsfleet_operator_reconcile_errors_total{error=\"kube\"} 1"));
        assert!(text.contains("wsfleet_operator_reconcile_duration_seconds_count 1"));
    }
}
