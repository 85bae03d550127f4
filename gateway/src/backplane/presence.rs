//! Node presence: `<prefix>:presence:<node id>` is a hash (connections, cap, state, heartbeat
//! time) with the registry TTL, rewritten on every maintenance tick, so a node that stops
//! heartbeating disappears from Redis on its own.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::BackplaneError;
use super::keys::Keys;
use super::links::Commands;

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub connections: u64,
    pub cap: u64,
    /// The node's lifecycle state as the gateway names it (e.g. "serving", "draining").
    pub state: String,
    /// Milliseconds since the Unix epoch when the node last wrote its presence.
    pub heartbeat_unix_ms: u64,
}

pub(crate) async fn write(
    commands: &Commands,
    keys: &Keys,
    presence: &Presence,
    ttl: Duration,
) -> Result<(), BackplaneError> {
    let mut conn = commands.get()?;
    let key = keys.presence(keys.node_id());
    redis::pipe()
        .hset_multiple(
            &key,
            &[
                ("connections", presence.connections.to_string()),
                ("cap", presence.cap.to_string()),
                ("state", presence.state.clone()),
                ("heartbeat_unix_ms", now_unix_ms().to_string()),
            ],
        )
        .ignore()
        .pexpire(&key, ttl.as_millis() as i64)
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

pub(crate) async fn read(
    commands: &Commands,
    keys: &Keys,
    node_id: &str,
) -> Result<Option<Presence>, BackplaneError> {
    let mut conn = commands.get()?;
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.presence(node_id))
        .query_async(&mut conn)
        .await?;
    if fields.is_empty() {
        return Ok(None);
    }
    let number = |name: &str| -> Result<u64, BackplaneError> {
        fields
            .get(name)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| BackplaneError::UnexpectedReply(format!("presence field {name}")))
    };
    Ok(Some(Presence {
        connections: number("connections")?,
        cap: number("cap")?,
        state: fields.get("state").cloned().unwrap_or_default(),
        heartbeat_unix_ms: number("heartbeat_unix_ms")?,
    }))
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
