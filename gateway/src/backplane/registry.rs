//! The client→node registry: `<prefix>:client:<id>` holds `<incarnation>:<node id>` of the
//! node run that has the client's connection. An entry is only as good as its node: a lookup
//! also reads the node's liveness key `<prefix>:alive:<node id>` (the incarnation of its
//! current run, with the short registry TTL, rewritten by the node every third of it) and
//! resolves only when the two agree. So a dead node's clients stop resolving within the
//! registry TTL, a restarted node of the same name does not inherit its predecessor's
//! clients, and an idle connection costs Redis nothing between the node's full rewrites of
//! its entries (every `registry_refresh`; entries live three times that, so the leftovers of
//! a node that died without cleaning up go away on their own). A liveness key found missing
//! (Redis lost its data, or the node could not refresh it in time) triggers a full rewrite at
//! once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
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
        liveness: Arc<Liveness>,
        ttl: Duration,
    ) -> (Registrar, tokio::task::JoinHandle<()>) {
        let (queue, registrations) = mpsc::unbounded_channel();
        let writer = write_registrations(registrations, commands, keys, liveness, ttl);
        let task = runtime.spawn(writer);
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
    liveness: Arc<Liveness>,
    ttl: Duration,
) {
    let mut batch = Vec::new();
    while registrations.recv_many(&mut batch, BATCH).await > 0 {
        let (ids, waiting): (Vec<String>, Vec<_>) = batch.drain(..).unzip();
        let written = register(&commands, &keys, &liveness, &ids, ttl).await;
        for done in waiting {
            let _ = done.send(written.clone());
        }
    }
}

/// Registers clients: their entries, and this node run's liveness key with them unless it is
/// fresh, so they resolve from the moment the call returns.
pub(crate) async fn register(
    commands: &Commands,
    keys: &Keys,
    liveness: &Liveness,
    ids: &[String],
    ttl: Duration,
) -> Result<(), BackplaneError> {
    liveness.ensure(commands, keys).await?;
    write_entries(commands, keys, ids, ttl).await
}

/// Writes `client id → this node run` with the entry TTL for every id, in pipelined batches.
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
    let value = entry_value(keys);
    match commands.mode() {
        RedisMode::Standalone => {
            for batch in client_keys.chunks(BATCH) {
                let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
                set_batch(conn.clone(), &batch, &value, ttl_ms).await?;
            }
            Ok(())
        }
        RedisMode::Cluster => write_by_slot(conn, &client_keys, &value, ttl_ms).await,
    }
}

/// Cluster pipelines must stay within one hash slot, so batches are per slot, sent
/// concurrently over the cluster's per-node multiplexed connections.
async fn write_by_slot(
    conn: RedisConn,
    client_keys: &[String],
    value: &str,
    ttl_ms: u64,
) -> Result<(), BackplaneError> {
    let mut groups = group_by_slot(client_keys).into_iter();
    let mut in_flight = JoinSet::new();
    let mut first_error = None;
    loop {
        while in_flight.len() < CLUSTER_CONCURRENCY {
            let Some(group) = groups.next() else { break };
            let group: Vec<String> = group.into_iter().map(String::from).collect();
            let (conn, value) = (conn.clone(), value.to_string());
            in_flight.spawn(async move {
                for batch in group.chunks(BATCH) {
                    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
                    set_batch(conn.clone(), &batch, &value, ttl_ms).await?;
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
    value: &str,
    ttl_ms: u64,
) -> Result<(), BackplaneError> {
    let mut pipe = redis::pipe();
    for key in client_keys {
        pipe.cmd("SET")
            .arg(*key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// Removes the entry only if it still names this node run.
pub(crate) async fn delete_entry(
    commands: &Commands,
    keys: &Keys,
    id: &str,
) -> Result<(), BackplaneError> {
    let mut conn = commands.get()?;
    UNREGISTER
        .key(keys.client(id))
        .arg(entry_value(keys))
        .invoke_async::<i64>(&mut conn)
        .await?;
    Ok(())
}

/// The node currently holding `client_id`: registered there, and that node run alive.
pub(crate) async fn lookup(
    commands: &Commands,
    keys: &Keys,
    client_id: &str,
) -> Result<Option<String>, BackplaneError> {
    let mut conn = commands.get()?;
    let entry: Option<String> = redis::cmd("GET")
        .arg(keys.client(client_id))
        .query_async(&mut conn)
        .await?;
    let Some(entry) = entry else {
        return Ok(None);
    };
    let (incarnation, node) = match parse_entry(&entry) {
        Some(parsed) => parsed,
        // Written by a gateway of an earlier version (a plain node id with the short TTL)
        // during a rolling upgrade: it expires on its own, trust it meanwhile.
        None => return Ok(Some(entry)),
    };
    let alive: Option<String> = redis::cmd("GET")
        .arg(keys.alive(node))
        .query_async(&mut conn)
        .await?;
    Ok((alive.as_deref() == Some(incarnation)).then(|| node.to_owned()))
}

/// This node run's liveness key, and whether every local entry needs rewriting because the
/// key was found missing.
pub(crate) struct Liveness {
    ttl: Duration,
    rewrite: AtomicBool,
    /// When the key was last written by this run.
    written: Mutex<Option<tokio::time::Instant>>,
}

impl Liveness {
    pub fn new(ttl: Duration) -> Liveness {
        Liveness {
            ttl,
            rewrite: AtomicBool::new(false),
            written: Mutex::new(None),
        }
    }

    /// Writes the liveness key unless this run wrote it within the last third of its TTL (the
    /// maintenance tick's period), so a registration costs no extra command but the first
    /// ones after start, or after the maintenance task fell behind.
    pub async fn ensure(&self, commands: &Commands, keys: &Keys) -> Result<(), BackplaneError> {
        let fresh = self
            .written
            .lock()
            .ok()
            .and_then(|w| *w)
            .is_some_and(|at| at.elapsed() < self.ttl / 3);
        if fresh {
            return Ok(());
        }
        self.refresh(commands, keys).await
    }

    /// Writes the liveness key. Found missing or naming another run (Redis lost its data, the
    /// key expired because the node could not refresh it in time, or this is the first
    /// write), it asks for a full rewrite of the entries ([`Liveness::take_rewrite`]).
    pub async fn refresh(&self, commands: &Commands, keys: &Keys) -> Result<(), BackplaneError> {
        let mut conn = commands.get()?;
        let previous: Option<String> = redis::cmd("SET")
            .arg(keys.alive(keys.node_id()))
            .arg(keys.incarnation())
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        if previous.as_deref() != Some(keys.incarnation()) {
            self.rewrite.store(true, Ordering::Relaxed);
        }
        if let Ok(mut written) = self.written.lock() {
            *written = Some(tokio::time::Instant::now());
        }
        Ok(())
    }

    /// Whether a full rewrite was asked for since the last call.
    pub fn take_rewrite(&self) -> bool {
        self.rewrite.swap(false, Ordering::Relaxed)
    }

    /// Asks for a full rewrite again (the last one failed).
    pub fn ask_rewrite(&self) {
        self.rewrite.store(true, Ordering::Relaxed);
    }
}

/// A new random incarnation: 16 hex digits.
pub(crate) fn new_incarnation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What an entry of this node run holds.
fn entry_value(keys: &Keys) -> String {
    format!("{}:{}", keys.incarnation(), keys.node_id())
}

/// `(incarnation, node id)` of an entry, or `None` for a plain node id (an earlier version's).
fn parse_entry(entry: &str) -> Option<(&str, &str)> {
    let (incarnation, node) = entry.split_once(':')?;
    let is_incarnation =
        incarnation.len() == 16 && incarnation.bytes().all(|b| b.is_ascii_hexdigit());
    (is_incarnation && !node.is_empty()).then_some((incarnation, node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_the_node_run() {
        let keys = Keys::new("wsf", "gw-0:a").with_incarnation(new_incarnation());
        let value = entry_value(&keys);
        assert_eq!(
            parse_entry(&value),
            Some((keys.incarnation(), "gw-0:a")),
            "a node id may contain ':'"
        );
        assert_ne!(new_incarnation(), new_incarnation());
        for legacy in [
            "gw-0",
            "node:with:colons",
            "0123456789abcdeg:n",
            "0123456789abcdef:",
        ] {
            assert_eq!(parse_entry(legacy), None, "{legacy}");
        }
    }
}
