//! The engine seam: how a node publishes, subscribes (and resumes from history) and reaches
//! client ids across the fleet. `Engine` is an enum over the available engines (dispatch
//! without boxed futures): the in-process engine for a single node, and the Redis engine over
//! the [`backplane`](crate::backplane). Every engine delivers into the node's local
//! [`Subscriptions`] index.

pub mod memory;
pub mod redis;

use crate::backplane::{self, Backplane, BackplaneConfig, BackplaneStats};
use crate::config::Config;
use crate::outbox::Outbox;
use crate::protocol::{ErrorCode, Since};
use crate::subscriptions::{ConnId, Subscriptions};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

/// How much channel history an engine keeps for resuming subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBounds {
    /// At most this many messages per channel (at least 1).
    pub max_messages: usize,
    /// Messages older than this are dropped; zero disables the age bound.
    pub max_age: Duration,
}

impl HistoryBounds {
    pub fn from_config(config: &Config) -> Self {
        HistoryBounds {
            max_messages: config.history_max_messages,
            max_age: config.history_max_age,
        }
    }
}

/// A position in a channel's history (offset and epoch), the backplane's own.
pub use crate::backplane::Position;

/// What a publish did: the message's position, or, for an idempotency key already seen within
/// the window, the first publish's position and nothing delivered (`duplicate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub position: Position,
    pub duplicate: bool,
}

/// The reply to a subscribe: where the channel stands, and, when the client gave `since`,
/// whether everything after it was (or needed no) replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    pub position: Position,
    pub recovered: Option<bool>,
}

/// The backplane's state as reported in `/status`, `/readyz` and metrics.
pub use wsfleet_api::BackplaneState;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no connected client with id `{0}`")]
    ClientNotFound(String),
    #[error("backplane unavailable: {0}")]
    Unavailable(String),
}

impl EngineError {
    /// The protocol error code a client sees for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::ClientNotFound(_) => ErrorCode::NotFound,
            EngineError::Unavailable(_) => ErrorCode::Internal,
        }
    }
}

/// The node's engine.
pub enum Engine {
    Memory(memory::MemoryEngine),
    Redis(redis::RedisEngine),
}

impl Engine {
    /// The engine the config asks for: in-process when `redis_url` is empty, otherwise the
    /// Redis engine. An unreachable Redis is not an error: the engine starts Down and comes up
    /// when Redis does; only an unusable configuration fails here.
    pub async fn connect(config: &Config, local: Arc<Subscriptions>) -> anyhow::Result<Engine> {
        let bounds = HistoryBounds::from_config(config);
        if config.redis_url.is_empty() {
            let window = config.idempotency_window;
            return Ok(Engine::Memory(memory::MemoryEngine::new(
                local, bounds, window,
            )));
        }
        let mut settings = BackplaneConfig::new(
            &config.redis_url,
            config.redis_mode,
            &config.key_prefix,
            &config.node_id,
        );
        settings.idempotency_window = config.idempotency_window;
        settings.tls = config
            .redis_tls
            .as_ref()
            .map(|tls| backplane::TlsCertificates {
                root_cert: tls.ca_pem.clone(),
                client_tls: tls
                    .client_cert_pem
                    .as_ref()
                    .zip(tls.client_key_pem.as_ref())
                    .map(|(cert, key)| backplane::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.clone(),
                    }),
            });
        settings.history_max_len = bounds.max_messages as u64;
        settings.history_max_age = bounds.max_age;
        let (backplane, deliveries) = Backplane::connect(settings)
            .map_err(|error| anyhow::anyhow!("starting the Redis backplane: {error}"))?;
        Ok(Engine::Redis(redis::RedisEngine::new(
            local, backplane, deliveries,
        )))
    }

    /// The local delivery index this engine delivers into.
    pub fn local(&self) -> &Subscriptions {
        match self {
            Engine::Memory(engine) => engine.local(),
            Engine::Redis(engine) => engine.local(),
        }
    }

    /// Subscribes a local connection to a channel. With `since`, the messages after it are
    /// queued first when history still has them, then live ones, without gap or duplicate.
    pub async fn subscribe(
        &self,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        channel: &str,
        since: Option<&Since>,
    ) -> Result<Subscribed, EngineError> {
        match self {
            Engine::Memory(engine) => Ok(engine.subscribe(conn, outbox, channel, since)),
            Engine::Redis(engine) => engine.subscribe(conn, outbox, channel, since).await,
        }
    }

    /// Unsubscribes a local connection; unknown subscriptions are a no-op.
    pub async fn unsubscribe(&self, conn: ConnId, channel: &str) -> Result<(), EngineError> {
        match self {
            Engine::Memory(engine) => {
                engine.local().unsubscribe(channel, conn);
            }
            Engine::Redis(engine) => engine.unsubscribe(conn, channel).await,
        }
        Ok(())
    }

    /// Publishes `data` to every subscriber of `channel` in the fleet; returns the assigned
    /// position. With an idempotency key, at most once per key and channel within the window
    /// (`idempotency_window_secs`).
    pub async fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        idempotency_key: Option<&str>,
    ) -> Result<Published, EngineError> {
        match self {
            Engine::Memory(engine) => Ok(engine.publish_once(channel, data, idempotency_key)),
            Engine::Redis(engine) => engine.publish(channel, data, idempotency_key).await,
        }
    }

    /// Sends a `direct` frame to every connection of client `to`, wherever it is connected.
    pub async fn send(&self, from: &str, to: &str, data: &RawValue) -> Result<(), EngineError> {
        match self {
            Engine::Memory(engine) => engine.send(from, to, data),
            Engine::Redis(engine) => engine.send(from, to, data).await,
        }
    }

    /// Records a local connection of a client; its first one here writes the registry entry.
    pub async fn register(&self, client_id: &str, conn: ConnId, outbox: &Arc<Outbox>) {
        let first_here = self.local().add_client(client_id, conn, outbox);
        if let Engine::Redis(engine) = self
            && first_here
        {
            engine.register(client_id).await;
        }
    }

    /// Forgets a local connection of a client; with its last one, the registry entry.
    pub async fn unregister(&self, client_id: &str, conn: ConnId) {
        let last_here = self.local().remove_client(client_id, conn);
        if let Engine::Redis(engine) = self
            && last_here
        {
            engine.unregister(client_id).await;
        }
    }

    /// The backplane's current state.
    pub fn backplane(&self) -> BackplaneState {
        match self {
            Engine::Memory(_) => BackplaneState::Memory,
            Engine::Redis(engine) => engine.state(),
        }
    }

    /// The backplane's health counters (none for the in-process engine).
    pub fn backplane_stats(&self) -> Option<BackplaneStats> {
        match self {
            Engine::Memory(_) => None,
            Engine::Redis(engine) => Some(engine.backplane().stats()),
        }
    }

    /// Publishes this node's presence (connections, cap, lifecycle state) to the fleet; a
    /// no-op for the in-process engine.
    pub async fn report_presence(&self, connections: usize, cap: usize, state: &str) {
        if let Engine::Redis(engine) = self {
            engine.report_presence(connections, cap, state).await;
        }
    }
}
