//! The node's shared state: its config, engine, authenticator, connection count against the
//! cap, handshake budget, and lifecycle state (serving / draining / drained).

use crate::auth::Authenticator;
use crate::config::Config;
use crate::credentials::Credential;
pub use crate::drain::NodeState;
use crate::drain::{self, Begun, DrainRequest, Lifecycle};
use crate::engine::{BackplaneState, Engine};
use crate::metrics::metrics;
use crate::subscriptions::ConnId;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

pub struct Node {
    pub config: Config,
    pub engine: Engine,
    pub auth: Authenticator,
    /// Opens `POST`/`DELETE /drain` on the admin port.
    pub drain_token: Arc<Credential>,
    /// Opens the publish API.
    pub publish_token: Arc<Credential>,
    connections: AtomicUsize,
    next_conn: AtomicU64,
    /// Serving, draining or drained; connections watch it.
    pub lifecycle: Lifecycle,
    budget: HandshakeBudget,
}

impl Node {
    /// A node with the credentials its config names (read now; token files are then re-read
    /// in the background). Fails when a configured token file is unusable.
    pub fn new(config: Config, engine: Engine, auth: Authenticator) -> anyhow::Result<Self> {
        let budget = HandshakeBudget::new(config.handshakes_per_second);
        metrics().set_backplane(engine.backplane().as_str());
        let drain_token = Credential::load("drain", config.drain_token.clone())?;
        let publish_token = Credential::load("publish", config.publish_token.clone())?;
        Arc::clone(&drain_token).reload_forever();
        Arc::clone(&publish_token).reload_forever();
        Ok(Node {
            config,
            engine,
            auth,
            drain_token,
            publish_token,
            connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            lifecycle: Lifecycle::default(),
            budget,
        })
    }

    pub fn state(&self) -> NodeState {
        self.lifecycle.phase().state()
    }

    /// True while the node takes new clients (not draining or drained).
    pub fn serving(&self) -> bool {
        self.lifecycle.phase().drain().is_none()
    }

    /// Starts a drain (or returns the one under way) and its supervisor, which ends it when
    /// the node is empty or at the deadline.
    pub fn drain(self: &Arc<Self>, request: &DrainRequest) -> Begun {
        let begun = self.lifecycle.begin(request, self.connections());
        if begun.started && request.count.is_some() {
            tracing::info!(
                reason = &*begun.drain.reason,
                window_secs = request.window_seconds,
                count = request.count,
                connections = self.connections(),
                "partial drain started"
            );
            let node = Arc::clone(self);
            let drain = Arc::clone(&begun.drain);
            tokio::spawn(async move { node.lifecycle.end_shedding_after(&drain).await });
        } else if begun.started {
            tracing::info!(
                reason = &*begun.drain.reason,
                window_secs = request.window_seconds,
                deadline_secs = request.deadline_seconds,
                connections = self.connections(),
                "drain started"
            );
            let node = Arc::clone(self);
            let drain = Arc::clone(&begun.drain);
            tokio::spawn(async move {
                drain::supervise(&node.lifecycle, &drain, || node.connections()).await;
            });
        }
        begun
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Ready for new clients: serving, below the cap, and the backplane usable.
    pub fn ready(&self) -> bool {
        self.serving()
            && self.connections() < self.config.max_connections
            && self.engine.backplane() != BackplaneState::Down
    }

    /// Takes one connection slot under the cap; `None` at the cap.
    pub fn admit(self: &Arc<Self>) -> Option<ConnSlot> {
        let max = self.config.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        metrics().connections.inc();
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        Some(ConnSlot {
            node: Arc::clone(self),
            id,
        })
    }

    /// Spends one handshake from the budget; false when it is exhausted.
    pub fn take_handshake(&self) -> bool {
        self.budget.take()
    }
}

/// A held connection slot; released (and the gauge lowered) on drop.
pub struct ConnSlot {
    node: Arc<Node>,
    pub id: ConnId,
}

impl ConnSlot {
    pub fn node(&self) -> &Node {
        &self.node
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.node.connections.fetch_sub(1, Ordering::AcqRel);
        metrics().connections.dec();
    }
}

/// A token bucket of handshakes: refills at `rate` per second, holds at most one second's
/// worth, so bursts after a quiet period are bounded too.
struct HandshakeBudget {
    rate: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl HandshakeBudget {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        HandshakeBudget {
            rate,
            bucket: Mutex::new((rate, Instant::now())),
        }
    }

    fn take(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * self.rate;
        bucket.0 = (bucket.0 + refill).min(self.rate);
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_a_burst_then_refuses() {
        let budget = HandshakeBudget::new(3);
        assert!(budget.take() && budget.take() && budget.take());
        assert!(!budget.take());
    }
}
