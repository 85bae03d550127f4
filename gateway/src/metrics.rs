//! Prometheus metrics of the node: one process-wide registry, rendered by the admin port's
//! `/metrics`.

use crate::backplane::BackplaneStats;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// Upgrade attempts by result (`accepted`, `unauthorized`, `forbidden`, `at_capacity`,
    /// `rate_limited`, `draining`, `failed`, `timeout`).
    pub handshakes: IntCounterVec,
    /// Client frames received.
    pub messages_in: IntCounter,
    /// Frames written to clients.
    pub messages_out: IntCounter,
    /// Seconds from a frame being queued for a connection to it being flushed, sampled once
    /// per write batch (its oldest frame).
    pub delivery_latency: Histogram,
    /// Frames not delivered, by reason (`drop_oldest`, `slow_consumer`).
    pub dropped: IntCounterVec,
    /// Connections closed because they stopped answering heartbeats.
    pub heartbeat_timeouts: IntCounter,
    pub token_expiry_closes: IntCounter,
    /// `dropped{reason="drop_oldest"}`, resolved once: it is bumped on the delivery path.
    pub dropped_oldest: IntCounter,
    /// `dropped{reason="slow_consumer"}`, resolved once.
    pub dropped_slow_consumer: IntCounter,
    /// 1 for the backplane's current state (`memory`, `up`, `down`), 0 for the others.
    pub backplane: IntGaugeVec,
    /// 1 while the Redis backplane is Up (or there is none), 0 while Down.
    pub backplane_up: IntGauge,
    /// Redis backplane health, copied from its counters at each scrape.
    pub backplane_links_lost: IntGauge,
    pub backplane_probe_failures: IntGauge,
    pub backplane_probe_rtt: Gauge,
    pub backplane_caught_up: IntGauge,
    /// 1 while the node is draining or drained, 0 while serving.
    pub draining: IntGauge,
    /// Connections still on the node while it drains (0 while serving).
    pub drain_remaining: IntGauge,
    /// `reconnect` hints written to clients by drains.
    pub drain_reconnects: IntCounter,
    /// Connections closed with 1012 by drains (at their time or at the deadline).
    pub drain_closes: IntCounter,
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("wsfleet".into()), None)?;
        let connections = IntGauge::new("connections", "Open WebSocket connections")?;
        let handshakes = IntCounterVec::new(
            Opts::new("handshakes_total", "WebSocket upgrade attempts by result"),
            &["result"],
        )?;
        let messages_in = IntCounter::new("messages_in_total", "Client frames received")?;
        let messages_out = IntCounter::new("messages_out_total", "Frames written to clients")?;
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "delivery_latency_seconds",
                "Time from queueing a frame for a connection to flushing it (oldest frame per write batch)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "dropped_messages_total",
                "Frames not delivered to a client, by reason",
            ),
            &["reason"],
        )?;
        let heartbeat_timeouts = IntCounter::new(
            "heartbeat_timeouts_total",
            "Connections closed for not answering heartbeats",
        )?;
        let token_expiry_closes = IntCounter::new(
            "token_expiry_closes_total",
            "Connections closed (4001) because their token expired without a refresh",
        )?;
        let backplane = IntGaugeVec::new(
            Opts::new("backplane_state", "1 for the backplane's current state"),
            &["state"],
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(handshakes.clone()))?;
        registry.register(Box::new(messages_in.clone()))?;
        registry.register(Box::new(messages_out.clone()))?;
        registry.register(Box::new(delivery_latency.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(heartbeat_timeouts.clone()))?;
        registry.register(Box::new(token_expiry_closes.clone()))?;
        let backplane_up = IntGauge::new(
            "backplane_up",
            "1 while the backplane delivers (or the node has none), 0 while it is down",
        )?;
        let backplane_links_lost = IntGauge::new(
            "backplane_links_lost_total",
            "Redis subscription links lost (connection closed, probe failed, topic dropped)",
        )?;
        let backplane_probe_failures = IntGauge::new(
            "backplane_probe_failures_total",
            "Backplane liveness probes that did not come back in time",
        )?;
        let backplane_probe_rtt = Gauge::new(
            "backplane_probe_rtt_seconds",
            "Round trip of the last successful backplane liveness probe",
        )?;
        let backplane_caught_up = IntGauge::new(
            "backplane_caught_up_messages_total",
            "Channel messages the backplane delivered from history to fill a gap",
        )?;
        registry.register(Box::new(backplane.clone()))?;
        registry.register(Box::new(backplane_up.clone()))?;
        registry.register(Box::new(backplane_links_lost.clone()))?;
        registry.register(Box::new(backplane_probe_failures.clone()))?;
        registry.register(Box::new(backplane_probe_rtt.clone()))?;
        registry.register(Box::new(backplane_caught_up.clone()))?;
        let draining = IntGauge::new("draining", "1 while the node is draining or drained")?;
        let drain_remaining = IntGauge::new(
            "drain_remaining_connections",
            "Connections still on the node while it drains",
        )?;
        let drain_reconnects = IntCounter::new(
            "drain_reconnects_sent_total",
            "Reconnect hints sent to clients by drains",
        )?;
        let drain_closes = IntCounter::new(
            "drain_closes_total",
            "Connections closed with 1012 (service restart) by drains",
        )?;
        registry.register(Box::new(draining.clone()))?;
        registry.register(Box::new(drain_remaining.clone()))?;
        registry.register(Box::new(drain_reconnects.clone()))?;
        registry.register(Box::new(drain_closes.clone()))?;
        let dropped_oldest = dropped.with_label_values(&["drop_oldest"]);
        let dropped_slow_consumer = dropped.with_label_values(&["slow_consumer"]);
        Ok(Metrics {
            dropped_oldest,
            dropped_slow_consumer,
            registry,
            connections,
            handshakes,
            messages_in,
            messages_out,
            delivery_latency,
            dropped,
            heartbeat_timeouts,
            token_expiry_closes,
            backplane,
            backplane_up,
            backplane_links_lost,
            backplane_probe_failures,
            backplane_probe_rtt,
            backplane_caught_up,
            draining,
            drain_remaining,
            drain_reconnects,
            drain_closes,
        })
    }

    /// Counts one upgrade attempt by result.
    pub fn handshake(&self, result: &str) {
        self.handshakes.with_label_values(&[result]).inc();
    }

    /// Records the backplane's state as a one-hot gauge.
    pub fn set_backplane(&self, state: &str) {
        for candidate in ["memory", "up", "down"] {
            self.backplane
                .with_label_values(&[candidate])
                .set(i64::from(candidate == state));
        }
        self.backplane_up.set(i64::from(state != "down"));
    }

    /// Copies the Redis backplane's health counters (monotonic in the backplane itself).
    pub fn set_backplane_stats(&self, stats: &BackplaneStats) {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.backplane_links_lost.set(count(stats.links_lost));
        self.backplane_probe_failures
            .set(count(stats.probe_failures));
        self.backplane_probe_rtt
            .set(stats.last_probe_rtt.as_secs_f64());
        self.backplane_caught_up
            .set(count(stats.caught_up_messages));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(4096);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%err, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| Metrics::new().expect("metric definitions are static and valid"));

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}
