//! The engine seam: how a node publishes, subscribes and reaches client ids across the fleet.
//! `Engine` is an enum over the available engines (dispatch without boxed futures). Every
//! engine shares the node's local [`Subscriptions`] index: this module keeps that index and
//! tells the engine when a channel gains its first or loses its last local subscriber, so a
//! backplane listens on a channel's topic only while the node has ≥ 1 local subscriber.
//!
//! Adding an engine: add a variant, build it in [`Engine::connect`], and fill in each
//! method's arm. A backplane engine subscribes its topic when `first_here` is true and drops
//! it when `last_here` is true, keeps its registry entry while a client has local
//! connections (same flags in `register`/`unregister`), and delivers what arrives from the
//! backplane with [`Subscriptions::deliver_channel`] / [`Subscriptions::deliver_client`],
//! encoding each frame once with [`crate::protocol::encode`].

pub mod memory;

use crate::config::Config;
use crate::outbox::Outbox;
use crate::protocol::{ErrorCode, Since};
use crate::subscriptions::{ConnId, Subscriptions};
use serde_json::value::RawValue;
use std::fmt;
use std::sync::Arc;

/// A position in a channel's history: the offset of the last message and the history
/// generation (`epoch`) that offset belongs to. Offsets of different epochs do not compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// The reply to a subscribe: where the channel stands, and, when the client gave `since`,
/// whether everything after it was (or needed no) replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    pub position: Position,
    pub recovered: Option<bool>,
}

/// The backplane's state as reported in `/status`, `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackplaneState {
    /// In-process engine: no backplane, always usable.
    Memory,
    Up,
    Down,
}

impl BackplaneState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackplaneState::Memory => "memory",
            BackplaneState::Up => "up",
            BackplaneState::Down => "down",
        }
    }
}

impl fmt::Display for BackplaneState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
}

impl Engine {
    /// The engine the config asks for: in-process when `redis_url` is empty.
    pub async fn connect(config: &Config, local: Arc<Subscriptions>) -> anyhow::Result<Engine> {
        if config.redis_url.is_empty() {
            return Ok(Engine::memory(local));
        }
        anyhow::bail!("redis_url is set, but this build has only the in-process engine")
    }

    /// The in-process single-node engine.
    pub fn memory(local: Arc<Subscriptions>) -> Self {
        Engine::Memory(memory::MemoryEngine::new(local))
    }

    /// The local delivery index this engine delivers into.
    pub fn local(&self) -> &Subscriptions {
        match self {
            Engine::Memory(engine) => engine.local(),
        }
    }

    /// Subscribes a local connection to a channel.
    pub async fn subscribe(
        &self,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        channel: &str,
        since: Option<&Since>,
    ) -> Result<Subscribed, EngineError> {
        let first_here = self.local().subscribe(channel, conn, outbox);
        let result = match self {
            Engine::Memory(engine) => Ok(engine.subscribed(channel, since)),
        };
        if result.is_err() && first_here {
            self.local().unsubscribe(channel, conn);
        }
        result
    }

    /// Unsubscribes a local connection; unknown subscriptions are a no-op.
    pub async fn unsubscribe(&self, conn: ConnId, channel: &str) -> Result<(), EngineError> {
        let last_here = self.local().unsubscribe(channel, conn);
        match self {
            // Nothing to stop listening to without a backplane.
            Engine::Memory(_) => {
                let _ = last_here;
                Ok(())
            }
        }
    }

    /// Publishes to every subscriber of a channel in the fleet; returns the assigned offset.
    pub async fn publish(&self, channel: &str, data: &RawValue) -> Result<Position, EngineError> {
        match self {
            Engine::Memory(engine) => Ok(engine.publish(channel, data)),
        }
    }

    /// Sends a `direct` frame to every connection of client `to`, wherever it is connected.
    pub async fn send(&self, from: &str, to: &str, data: &RawValue) -> Result<(), EngineError> {
        match self {
            Engine::Memory(engine) => engine.send(from, to, data),
        }
    }

    /// Records a local connection of a client in the registry.
    pub async fn register(&self, client_id: &str, conn: ConnId, outbox: &Arc<Outbox>) {
        let first_here = self.local().add_client(client_id, conn, outbox);
        match self {
            // The local index is the whole registry of a single node.
            Engine::Memory(_) => {
                let _ = first_here;
            }
        }
    }

    /// Forgets a local connection of a client; with its last one, the registry entry.
    pub async fn unregister(&self, client_id: &str, conn: ConnId) {
        let last_here = self.local().remove_client(client_id, conn);
        match self {
            Engine::Memory(_) => {
                let _ = last_here;
            }
        }
    }

    /// The backplane's current state.
    pub fn backplane(&self) -> BackplaneState {
        match self {
            Engine::Memory(_) => BackplaneState::Memory,
        }
    }
}
