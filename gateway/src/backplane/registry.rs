//! The client→node registry: `<prefix>:client:<id>` holds the id of the node that has the
//! client's connection, with a TTL. The node keeps its local client set and rewrites all its
//! entries in pipelined batches, so entries come back after Redis lost its data and vanish
//! when a node dies without unregistering.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::Script;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::config::RedisMode;
use super::error::BackplaneError;
use super::keys::Keys;
use super::links::{Commands, RedisConn, group_by_slot};

static UNREGISTER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("unregister.lua")));

/// Commands per pipeline: large enough that many clients cost few round trips, small enough
/// that one batch never monopolises Redis.
const BATCH: usize = 1000;
/// Cluster mode sends one pipeline per hash slot; this many are in flight at once.
const CLUSTER_CONCURRENCY: usize = 16;

/// The ids of the clients connected to this node.
#[derive(Default)]
pub(crate) struct LocalClients {
    ids: Mutex<HashSet<String>>,
}

impl LocalClients {
    pub fn insert(&self, ids: &[String]) {
        if let Ok(mut set) = self.ids.lock() {
            set.extend(ids.iter().cloned());
        }
    }

    pub fn add(&self, id: &str) {
        if let Ok(mut set) = self.ids.lock() {
            set.insert(id.to_owned());
        }
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut set) = self.ids.lock() {
            set.remove(id);
        }
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.ids
            .lock()
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A newly connected client's registry write, and who waits for its outcome.
type Registration = (String, oneshot::Sender<Result<(), BackplaneError>>);

/// Gathers the registry writes of newly connected clients. While one pipeline is in flight,
/// the next connections queue and go together in the following one, so a connect storm (a
/// drain moving thousands of clients here) costs a pipeline per batch, not a command per
/// connection. Nothing waits to fill a batch: a lone connection is written at once.
pub(crate) struct Registrar {
    queue: mpsc::UnboundedSender<Registration>,
}

impl Registrar {
    /// Starts the writer task on `runtime`; it ends when the registrar is dropped.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        commands: Arc<Commands>,
        keys: Keys,
        ttl: Duration,
    ) -> (Registrar, tokio::task::JoinHandle<()>) {
        let (queue, registrations) = mpsc::unbounded_channel();
        let task = runtime.spawn(write_registrations(registrations, commands, keys, ttl));
        (Registrar { queue }, task)
    }

    /// Writes `id → this node` with the next batch and returns once it is written (or failed).
    pub async fn register(&self, id: &str) -> Result<(), BackplaneError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send((id.to_owned(), done))
            .map_err(|_| BackplaneError::Unavailable)?;
        outcome.await.unwrap_or(Err(BackplaneError::Unavailable))
    }
}

async fn write_registrations(
    mut registrations: mpsc::UnboundedReceiver<Registration>,
    commands: Arc<Commands>,
    keys: Keys,
    ttl: Duration,
) {
    let mut batch = Vec::new();
    while registrations.recv_many(&mut batch, BATCH).await > 0 {
        let (ids, waiting): (Vec<String>, Vec<_>) = batch.drain(..).unzip();
        let written = write_entries(&commands, &keys, &ids, ttl).await;
        for done in waiting {
            let _ = done.send(written.clone());
        }
    }
}

/// Writes `client id → this node` with the TTL for every id, in pipelined batches.
pub(crate) async fn write_entries(
    commands: &Commands,
    keys: &Keys,
    ids: &[String],
    ttl: Duration,
) -> Result<(), BackplaneError> {
    if ids.is_empty() {
        return Ok(());
    }
    let conn = commands.get()?;
    let client_keys: Vec<String> = ids.iter().map(|id| keys.client(id)).collect();
    let ttl_ms = ttl.as_millis() as u64;
    match commands.mode() {
        RedisMode::Standalone => {
            for batch in client_keys.chunks(BATCH) {
                let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
                set_batch(conn.clone(), &batch, keys.node_id(), ttl_ms).await?;
            }
            Ok(())
        }
        RedisMode::Cluster => write_by_slot(conn, &client_keys, keys.node_id(), ttl_ms).await,
    }
}

/// Cluster pipelines must stay within one hash slot, so batches are per slot, sent
/// concurrently over the cluster's per-node multiplexed connections.
async fn write_by_slot(
    conn: RedisConn,
    client_keys: &[String],
    node_id: &str,
    ttl_ms: u64,
) -> Result<(), BackplaneError> {
    let mut groups = group_by_slot(client_keys).into_iter();
    let mut in_flight = JoinSet::new();
    let mut first_error = None;
    loop {
        while in_flight.len() < CLUSTER_CONCURRENCY {
            let Some(group) = groups.next() else { break };
            let group: Vec<String> = group.into_iter().map(String::from).collect();
            let (conn, node_id) = (conn.clone(), node_id.to_string());
            in_flight.spawn(async move {
                for batch in group.chunks(BATCH) {
                    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
                    set_batch(conn.clone(), &batch, &node_id, ttl_ms).await?;
                }
                Ok::<_, BackplaneError>(())
            });
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(join_error) => {
                first_error.get_or_insert(BackplaneError::UnexpectedReply(join_error.to_string()));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn set_batch(
    mut conn: RedisConn,
    client_keys: &[&str],
    node_id: &str,
    ttl_ms: u64,
) -> Result<(), BackplaneError> {
    let mut pipe = redis::pipe();
    for key in client_keys {
        pipe.cmd("SET")
            .arg(*key)
            .arg(node_id)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// Removes the entry only if it still names this node.
pub(crate) async fn delete_entry(
    commands: &Commands,
    keys: &Keys,
    id: &str,
) -> Result<(), BackplaneError> {
    let mut conn = commands.get()?;
    UNREGISTER
        .key(keys.client(id))
        .arg(keys.node_id())
        .invoke_async::<i64>(&mut conn)
        .await?;
    Ok(())
}

/// The node currently holding `client_id`, if registered.
pub(crate) async fn lookup(
    commands: &Commands,
    keys: &Keys,
    client_id: &str,
) -> Result<Option<String>, BackplaneError> {
    let mut conn = commands.get()?;
    let node: Option<String> = redis::cmd("GET")
        .arg(keys.client(client_id))
        .query_async(&mut conn)
        .await?;
    Ok(node)
}
