//! The Redis links of one backplane (its connections to Redis; "connection" alone means a
//! client's WebSocket): a shared command link (requests from any task) and a dedicated
//! subscription link whose pushes feed the subscriber task. Standalone
//! mode uses redis-rs's `ConnectionManager` / `MultiplexedConnection`; cluster mode uses
//! `ClusterConnection`, which routes every keyed command and sharded subscription by slot.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, ProtocolVersion,
    PushInfo, RedisError, RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};

use super::config::{BackplaneConfig, RedisMode};
use super::error::BackplaneError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Sharded subscribe commands (one per hash slot) in flight at once.
const SUBSCRIBE_CONCURRENCY: usize = 64;

/// A command connection of either mode; cheap to clone, usable from many tasks at once.
#[derive(Clone)]
pub(crate) enum RedisConn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Holds the command connection. Standalone: a lazily connecting `ConnectionManager` that
/// reconnects by itself. Cluster: a `ClusterConnection` created (and recreated after a failed
/// probe) by the subscriber task, absent while Redis is unreachable.
pub(crate) struct Commands {
    mode: RedisMode,
    standalone: Option<ConnectionManager>,
    cluster_client: Option<ClusterClient>,
    cluster: RwLock<Option<ClusterConnection>>,
}

impl Commands {
    pub fn new(config: &BackplaneConfig) -> Result<Arc<Self>, BackplaneError> {
        let invalid = |e: redis::RedisError| BackplaneError::InvalidConfig(e.to_string());
        let (standalone, cluster_client) = match config.mode {
            RedisMode::Standalone => {
                let client = client(config, config.url.as_str()).map_err(invalid)?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
                    .map_err(invalid)?;
                (Some(manager), None)
            }
            RedisMode::Cluster => {
                let client = cluster_builder(config).build().map_err(invalid)?;
                (None, Some(client))
            }
        };
        Ok(Arc::new(Self {
            mode: config.mode,
            standalone,
            cluster_client,
            cluster: RwLock::new(None),
        }))
    }

    pub fn mode(&self) -> RedisMode {
        self.mode
    }

    /// A connection for one request, or `Unavailable` while cluster mode has none.
    pub fn get(&self) -> Result<RedisConn, BackplaneError> {
        if let Some(manager) = &self.standalone {
            return Ok(RedisConn::Standalone(manager.clone()));
        }
        let guard = self
            .cluster
            .read()
            .map_err(|_| BackplaneError::Unavailable)?;
        guard
            .clone()
            .map(RedisConn::Cluster)
            .ok_or(BackplaneError::Unavailable)
    }

    /// Makes sure a command connection exists (cluster mode connects here).
    pub async fn ensure(&self) -> RedisResult<()> {
        let Some(client) = &self.cluster_client else {
            return Ok(());
        };
        if self.cluster.read().map(|c| c.is_some()).unwrap_or(false) {
            return Ok(());
        }
        let conn = client.get_async_connection().await?;
        if let Ok(mut slot) = self.cluster.write() {
            *slot = Some(conn);
        }
        Ok(())
    }

    /// Drops the cluster command connection so the next `ensure` builds a fresh one (after a
    /// failover its routing may be stale).
    pub fn reset(&self) {
        if let Ok(mut slot) = self.cluster.write() {
            *slot = None;
        }
    }
}

/// The connection carrying this node's subscriptions. Every message arrives as a RESP3 push on
/// the receiver returned by [`SubConn::open`].
pub(crate) enum SubConn {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl SubConn {
    pub async fn open(
        config: &BackplaneConfig,
    ) -> RedisResult<(Self, mpsc::UnboundedReceiver<PushInfo>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = match config.mode {
            RedisMode::Standalone => {
                let info = config.url.as_str().into_connection_info()?;
                let redis = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let client = client(config, info.set_redis_settings(redis))?;
                let conn_config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_push_sender(tx);
                Self::Standalone(
                    client
                        .get_multiplexed_async_connection_with_config(&conn_config)
                        .await?,
                )
            }
            RedisMode::Cluster => {
                let client = cluster_builder(config)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?;
                Self::Cluster(client.get_async_connection().await?)
            }
        };
        Ok((conn, rx))
    }

    /// Subscribes to `topics`. Cluster mode sends one SSUBSCRIBE per hash slot, because a
    /// sharded subscription command must not span slots.
    pub async fn subscribe(&mut self, topics: &[String]) -> RedisResult<()> {
        match self {
            Self::Standalone(conn) => {
                for chunk in topics.chunks(1000) {
                    conn.subscribe(chunk).await?;
                }
                Ok(())
            }
            Self::Cluster(conn) => {
                // Clones share the cluster's per-node connections, so groups go out
                // concurrently instead of one round trip after another.
                let mut in_flight = JoinSet::new();
                for group in group_by_slot(topics) {
                    if in_flight.len() >= SUBSCRIBE_CONCURRENCY
                        && let Some(done) = in_flight.join_next().await
                    {
                        joined(done)?;
                    }
                    let mut conn = conn.clone();
                    let group: Vec<String> = group.into_iter().map(String::from).collect();
                    in_flight.spawn(async move { conn.ssubscribe(group).await });
                }
                while let Some(done) = in_flight.join_next().await {
                    joined(done)?;
                }
                Ok(())
            }
        }
    }

    pub async fn unsubscribe(&mut self, topic: &str) -> RedisResult<()> {
        match self {
            Self::Standalone(conn) => conn.unsubscribe(topic).await,
            Self::Cluster(conn) => conn.sunsubscribe(topic).await,
        }
    }
}

fn joined(done: Result<RedisResult<()>, JoinError>) -> RedisResult<()> {
    done.map_err(|e| RedisError::from((ErrorKind::Client, "subscribe task failed", e.to_string())))?
}

/// Groups keys (or sharded topics) so that each group lies in one hash slot.
pub(crate) fn group_by_slot(keys: &[String]) -> Vec<Vec<&str>> {
    let mut groups: std::collections::HashMap<Slot, Vec<&str>> = Default::default();
    for key in keys {
        groups.entry(Slot::for_key(key)).or_default().push(key);
    }
    groups.into_values().collect()
}

/// A standalone client, with the configured CA bundle and client certificate when there are.
fn client(config: &BackplaneConfig, info: impl IntoConnectionInfo) -> RedisResult<Client> {
    match &config.tls {
        Some(certificates) => Client::build_with_tls(info, certificates.clone()),
        None => Client::open(info),
    }
}

fn cluster_builder(config: &BackplaneConfig) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(config.urls())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(2);
    match &config.tls {
        Some(certificates) => builder.certs(certificates.clone()),
        None => builder,
    }
}
