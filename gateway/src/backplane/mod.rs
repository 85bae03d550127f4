//! The Redis backplane: connects gateway nodes through Redis (standalone or Cluster). It owns
//! channel fan-out between nodes (reference-counted topic subscriptions), channel history with
//! offsets and epochs (Streams, written atomically with the live publish), direct sends through
//! the client→node registry, node presence, and an honest Up/Down state proven by a periodic
//! round trip through the node's own channel. Key layout and wire formats: docs/backplane.md.

mod backoff;
mod channel;
mod config;
mod cursors;
mod envelope;
mod error;
mod follower;
mod keys;
mod links;
mod presence;
mod probes;
mod registry;
mod stats;
mod subscriber;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tracing::debug;

pub use channel::{Position, Recovery};
pub use config::{BackplaneConfig, RedisMode};
pub use error::BackplaneError;
pub use presence::Presence;
// The TLS material of `BackplaneConfig::tls`, in redis-rs's own types.
pub use redis::{ClientTlsConfig, TlsCertificates};
pub use stats::BackplaneStats;

use keys::Keys;
use links::Commands;
use registry::{Liveness, LocalClients, Registrar};
use stats::Counters;
use subscriber::{Request, Subscriber};

/// Something that arrived from Redis for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A channel message; `data` is the raw JSON published, shared by every local subscriber.
    Channel {
        channel: String,
        offset: u64,
        epoch: String,
        data: Bytes,
    },
    /// A direct message for a client registered on this node.
    Direct {
        to: String,
        from: String,
        data: Bytes,
    },
}

/// The receiving end of all deliveries. Unbounded so that a burst never stalls the subscriber
/// task (and with it the liveness probe); the consumer must drain it promptly, e.g. by fanning
/// out into bounded per-connection queues.
pub type Deliveries = mpsc::UnboundedReceiver<Delivery>;

/// `Up` while the subscription connection demonstrably delivers (the last probe came back in
/// time); `Down` while Redis is unreachable or the subscription stopped delivering. The
/// backplane is never `Memory`: that is the in-process engine's.
pub use wsfleet_api::BackplaneState;

/// Handle to a running backplane; cheap to clone. Background tasks stop when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Backplane {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<BackplaneConfig>,
    keys: Keys,
    commands: Arc<Commands>,
    requests: mpsc::Sender<Request>,
    state: watch::Receiver<BackplaneState>,
    clients: Arc<LocalClients>,
    registrar: Registrar,
    liveness: Arc<Liveness>,
    presence: Arc<Mutex<Option<Presence>>>,
    counters: Arc<Counters>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Backplane {
    /// Starts the backplane's background tasks and returns at once, in state Down; it turns Up
    /// when Redis is reachable and the first probe returns. Fails only on invalid configuration
    /// or when called outside a Tokio runtime — an unreachable Redis is retried forever.
    pub fn connect(config: BackplaneConfig) -> Result<(Self, Deliveries), BackplaneError> {
        config.validate().map_err(BackplaneError::InvalidConfig)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| BackplaneError::InvalidConfig("not inside a Tokio runtime".into()))?;
        let config = Arc::new(config);
        let keys = Keys::new(&config.key_prefix, &config.node_id)
            .with_incarnation(registry::new_incarnation());
        let commands = Commands::new(&config)?;
        let (requests_tx, requests_rx) = mpsc::channel(1024);
        let (deliveries_tx, deliveries_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(BackplaneState::Down);
        let clients = Arc::new(LocalClients::default());
        let presence = Arc::new(Mutex::new(None));
        let counters = Arc::new(Counters::default());

        let subscriber = Subscriber::new(
            config.clone(),
            commands.clone(),
            requests_rx,
            deliveries_tx,
            state_tx,
            counters.clone(),
        );
        let subscriber_task = runtime.spawn(subscriber.run());
        let liveness = Arc::new(Liveness::new(config.registry_ttl));
        let maintenance_task = runtime.spawn(maintain(
            config.clone(),
            keys.clone(),
            commands.clone(),
            clients.clone(),
            liveness.clone(),
            presence.clone(),
        ));
        let (registrar, registrar_task) = Registrar::start(
            &runtime,
            commands.clone(),
            keys.clone(),
            liveness.clone(),
            config.entry_ttl(),
        );
        let inner = Inner {
            config,
            keys,
            commands,
            requests: requests_tx,
            state: state_rx,
            clients,
            registrar,
            liveness,
            presence,
            counters,
            tasks: vec![
                subscriber_task.abort_handle(),
                maintenance_task.abort_handle(),
                registrar_task.abort_handle(),
            ],
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            deliveries_rx,
        ))
    }

    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    pub fn state(&self) -> BackplaneState {
        *self.inner.state.borrow()
    }

    /// Health counters for metrics.
    pub fn stats(&self) -> BackplaneStats {
        self.inner.counters.snapshot()
    }

    /// A receiver of state changes (cheap to read from /readyz).
    pub fn state_watch(&self) -> watch::Receiver<BackplaneState> {
        self.inner.state.clone()
    }

    /// Waits until the state is Up, at most `limit`; returns whether it is Up.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let mut state = self.state_watch();
        tokio::time::timeout(limit, state.wait_for(|s| *s == BackplaneState::Up))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// Counts one more local subscriber of `channel`; the first one subscribes the channel's
    /// topic in Redis and this returns once Redis confirmed it, so a history read that follows
    /// cannot miss a message published in between. `Err(Unavailable)` means the subscriber is
    /// counted but Redis is unreachable: the topic is subscribed when it comes back. Every call
    /// must be balanced by one `unsubscribe_channel`, whatever it returned.
    pub async fn subscribe_channel(&self, channel: &str) -> Result<(), BackplaneError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Subscribe {
            channel: channel.to_string(),
            reply,
        };
        self.inner
            .requests
            .send(request)
            .await
            .map_err(|_| BackplaneError::Unavailable)?;
        answer.await.unwrap_or(Err(BackplaneError::Unavailable))
    }

    /// Counts one local subscriber less; the last one unsubscribes the topic in Redis.
    /// Deliveries already in flight for the channel may still arrive afterwards.
    pub async fn unsubscribe_channel(&self, channel: &str) {
        let (reply, answer) = oneshot::channel();
        let request = Request::Unsubscribe {
            channel: channel.to_string(),
            reply,
        };
        if self.inner.requests.send(request).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// Appends `data` to the channel's history and publishes it live, atomically; returns the
    /// message's offset and the channel's epoch.
    pub async fn publish(
        &self,
        channel: &str,
        data: &RawValue,
    ) -> Result<Position, BackplaneError> {
        let (position, _) = self.publish_once(channel, data, None).await?;
        Ok(position)
    }

    /// Publishes with an optional idempotency key: a key this channel saw within
    /// `idempotency_window` publishes nothing and returns the first publish's position, with
    /// `true` (a duplicate). A retry after an unanswered publish is then delivered once.
    pub async fn publish_once(
        &self,
        channel: &str,
        data: &RawValue,
        idempotency_key: Option<&str>,
    ) -> Result<(Position, bool), BackplaneError> {
        let mut conn = self.inner.commands.get()?;
        channel::publish(
            &mut conn,
            &self.inner.config,
            &self.inner.keys,
            channel,
            data,
            idempotency_key,
        )
        .await
    }

    /// The retained messages after `since_offset`, and whether they are complete (same epoch,
    /// no gap). Subscribe first, then read history, then drop live duplicates by offset.
    pub async fn history(
        &self,
        channel: &str,
        since_offset: u64,
        since_epoch: &str,
    ) -> Result<Recovery, BackplaneError> {
        let mut conn = self.inner.commands.get()?;
        channel::history(
            &mut conn,
            &self.inner.keys,
            channel,
            since_offset,
            since_epoch,
        )
        .await
    }

    /// The channel's last offset and epoch (what a subscribe ack reports). A channel with no
    /// sequence yet gets one at offset 0 with a fresh epoch, which its first message keeps.
    pub async fn position(&self, channel: &str) -> Result<Position, BackplaneError> {
        let mut conn = self.inner.commands.get()?;
        channel::position(&mut conn, &self.inner.config, &self.inner.keys, channel).await
    }

    /// Sends `data` to client `to` on whichever node holds it. Returns false when the client
    /// is not registered or its node is not listening.
    pub async fn send_direct(
        &self,
        to: &str,
        from: &str,
        data: &RawValue,
    ) -> Result<bool, BackplaneError> {
        let Some(node) = registry::lookup(&self.inner.commands, &self.inner.keys, to).await? else {
            return Ok(false);
        };
        let mut conn = self.inner.commands.get()?;
        let command = match self.inner.commands.mode() {
            RedisMode::Standalone => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        };
        let receivers: i64 = redis::cmd(command)
            .arg(self.inner.keys.node_channel(&node))
            .arg(envelope::encode_direct(to, from, data))
            .query_async(&mut conn)
            .await?;
        Ok(receivers > 0)
    }

    /// Registers clients as connected to this node (one pipelined write) and keeps their
    /// registry entries refreshed until unregistered. On error the clients stay registered
    /// locally and are written by the next refresh.
    pub async fn register_clients(&self, ids: &[String]) -> Result<(), BackplaneError> {
        self.inner.clients.insert(ids);
        registry::register(
            &self.inner.commands,
            &self.inner.keys,
            &self.inner.liveness,
            ids,
            self.inner.config.entry_ttl(),
        )
        .await
    }

    /// Registers one newly connected client, written together with the other connections of
    /// the moment (see [`Registrar`]). On error the client stays registered locally and is
    /// written by the next refresh.
    pub async fn register_client(&self, id: &str) -> Result<(), BackplaneError> {
        self.inner.clients.add(id);
        self.inner.registrar.register(id).await
    }

    /// Forgets a client; its registry entry is deleted unless another node already took it.
    pub async fn unregister_client(&self, id: &str) -> Result<(), BackplaneError> {
        self.inner.clients.remove(id);
        registry::delete_entry(&self.inner.commands, &self.inner.keys, id).await
    }

    /// The node a client is registered on.
    pub async fn client_node(&self, id: &str) -> Result<Option<String>, BackplaneError> {
        registry::lookup(&self.inner.commands, &self.inner.keys, id).await
    }

    /// Records this node's presence, writes it now and keeps refreshing it.
    pub async fn set_presence(
        &self,
        connections: u64,
        cap: u64,
        state: &str,
    ) -> Result<(), BackplaneError> {
        let presence = Presence {
            connections,
            cap,
            state: state.to_string(),
            heartbeat_unix_ms: presence::now_unix_ms(),
        };
        if let Ok(mut current) = self.inner.presence.lock() {
            *current = Some(presence.clone());
        }
        presence::write(
            &self.inner.commands,
            &self.inner.keys,
            &presence,
            self.inner.config.registry_ttl,
        )
        .await
    }

    /// Another (or this) node's last reported presence, if it has not expired.
    pub async fn presence(&self, node_id: &str) -> Result<Option<Presence>, BackplaneError> {
        presence::read(&self.inner.commands, &self.inner.keys, node_id).await
    }
}

/// How soon a failed liveness refresh is tried again.
const LIVENESS_RETRY: Duration = Duration::from_secs(1);

/// Every third of the registry TTL: refresh this node run's liveness key and the presence
/// hash. Every `registry_refresh`, and at once when the liveness key was missing, rewrite all
/// local registry entries.
async fn maintain(
    config: Arc<BackplaneConfig>,
    keys: Keys,
    commands: Arc<Commands>,
    clients: Arc<LocalClients>,
    liveness: Arc<Liveness>,
    presence: Arc<Mutex<Option<Presence>>>,
) {
    let mut ticks = tokio::time::interval(config.registry_ttl / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rewritten: Option<tokio::time::Instant> = None;
    loop {
        ticks.tick().await;
        if let Err(error) = liveness.refresh(&commands, &keys).await {
            // Soon again, not a third of the TTL later: until it is written, this node's
            // clients do not resolve.
            debug!(%error, "liveness refresh failed");
            ticks.reset_after(LIVENESS_RETRY);
            continue;
        }
        let due = rewritten.is_none_or(|at| at.elapsed() >= config.registry_refresh);
        if liveness.take_rewrite() || due {
            let ids = clients.snapshot();
            match registry::write_entries(&commands, &keys, &ids, config.entry_ttl()).await {
                Ok(()) => rewritten = Some(tokio::time::Instant::now()),
                Err(error) => {
                    debug!(%error, clients = ids.len(), "registry rewrite failed");
                    liveness.ask_rewrite();
                }
            }
        }
        let current = presence.lock().ok().and_then(|p| p.clone());
        if let Some(current) = current
            && let Err(error) =
                presence::write(&commands, &keys, &current, config.registry_ttl).await
        {
            debug!(%error, "presence refresh failed");
        }
    }
}
