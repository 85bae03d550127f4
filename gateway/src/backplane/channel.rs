//! Channel publish and history: the atomic publish script (sequence, epoch, Stream append,
//! trim, live publish) and the history read used to resume a subscription from an offset.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use redis::{Script, Value};
use serde_json::value::RawValue;

use super::config::{BackplaneConfig, RedisMode};
use super::error::BackplaneError;
use super::keys::Keys;

static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("publish.lua")));
static HISTORY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("history.lua")));
static START: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("start.lua")));

/// Channel metadata (sequence and epoch) outlives history by at least this much, so that an
/// idle channel keeps its offsets for a day before they reset (with a new epoch).
const MIN_METADATA_TTL: Duration = Duration::from_secs(24 * 3600);

/// A position in a channel's history: the offset of the last message and the history
/// generation (`epoch`) that offset belongs to; offsets of different epochs do not compare.
/// In a history read the epoch is "" when the channel has none (nothing published or
/// subscribed yet, or expired). The epoch is shared, not copied, by every ack that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// The answer to "what did I miss since (offset, epoch)?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// True when `messages` is exactly everything published after `since`: same epoch and no
    /// gap. False means the caller cannot be made whole and must be told so.
    pub recovered: bool,
    /// The channel's current position (last offset, epoch).
    pub position: Position,
    /// Retained messages after `since`, in offset order (possibly not contiguous with `since`
    /// when `recovered` is false).
    pub messages: Vec<(u64, Bytes)>,
}

/// Publishes `data` on `channel`. With an idempotency key, a key already seen within the
/// window publishes nothing and returns the first publish's position; the flag says so.
pub(crate) async fn publish(
    conn: &mut impl redis::aio::ConnectionLike,
    config: &BackplaneConfig,
    keys: &Keys,
    channel: &str,
    data: &RawValue,
    idempotency_key: Option<&str>,
) -> Result<(Position, bool), BackplaneError> {
    let channel_keys = keys.channel(channel);
    let max_age_ms = config.history_max_age.as_millis() as u64;
    let metadata_ttl_ms = metadata_ttl(config).as_millis() as u64;
    let sharded = if config.mode == RedisMode::Cluster {
        "1"
    } else {
        "0"
    };
    let mut invocation = PUBLISH.prepare_invoke();
    invocation
        .key(&channel_keys.seq)
        .key(&channel_keys.epoch)
        .key(&channel_keys.hist)
        .key(&channel_keys.live)
        .arg(data.get())
        .arg(new_epoch())
        .arg(config.history_max_len)
        .arg(max_age_ms)
        .arg(metadata_ttl_ms)
        .arg(sharded);
    if let Some(key) = idempotency_key {
        invocation
            .key(keys.idempotency(channel, key))
            .arg(config.idempotency_window.as_millis() as u64);
    }
    let (offset, epoch, duplicate): (u64, String, u8) = invocation.invoke_async(conn).await?;
    let position = Position {
        offset,
        epoch: epoch.into(),
    };
    Ok((position, duplicate == 1))
}

pub(crate) async fn history(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &Keys,
    channel: &str,
    since_offset: u64,
    since_epoch: &str,
) -> Result<Recovery, BackplaneError> {
    let channel_keys = keys.channel(channel);
    let first_wanted = since_offset.saturating_add(1);
    let (epoch, last, entries): (String, u64, Vec<Value>) = HISTORY
        .key(&channel_keys.seq)
        .key(&channel_keys.epoch)
        .key(&channel_keys.hist)
        .arg(format!("{first_wanted}-0"))
        .invoke_async(conn)
        .await?;
    let messages = entries
        .into_iter()
        .map(decode_entry)
        .collect::<Result<Vec<_>, _>>()?;
    let recovered = is_complete(since_offset, since_epoch, &epoch, last, &messages);
    Ok(Recovery {
        recovered,
        position: Position {
            offset: last,
            epoch: epoch.into(),
        },
        messages,
    })
}

/// The channel's position; a channel without a sequence gets one at offset 0 with a new
/// epoch, so the position always names the epoch of the channel's next messages.
pub(crate) async fn position(
    conn: &mut impl redis::aio::ConnectionLike,
    config: &BackplaneConfig,
    keys: &Keys,
    channel: &str,
) -> Result<Position, BackplaneError> {
    let channel_keys = keys.channel(channel);
    let (offset, epoch): (u64, String) = START
        .key(&channel_keys.seq)
        .key(&channel_keys.epoch)
        .key(&channel_keys.hist)
        .arg(new_epoch())
        .arg(metadata_ttl(config).as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(Position {
        offset,
        epoch: epoch.into(),
    })
}

fn metadata_ttl(config: &BackplaneConfig) -> Duration {
    config.history_max_age.max(MIN_METADATA_TTL)
}

/// The retained messages are everything after `since` when the epoch is unchanged, the first
/// one follows `since` directly and none is missing up to the last offset.
fn is_complete(
    since_offset: u64,
    since_epoch: &str,
    epoch: &str,
    last: u64,
    messages: &[(u64, Bytes)],
) -> bool {
    if epoch != since_epoch || since_offset > last {
        return false;
    }
    let expected = last - since_offset;
    let first_follows = messages
        .first()
        .is_none_or(|(offset, _)| *offset == since_offset + 1);
    first_follows && messages.len() as u64 == expected
}

/// A Stream entry `[id, ["d", data, "t", ms]]` → (offset, data).
fn decode_entry(entry: Value) -> Result<(u64, Bytes), BackplaneError> {
    let bad = |what: &str| BackplaneError::UnexpectedReply(format!("history entry: {what}"));
    let (id, fields): (String, Vec<Vec<u8>>) =
        redis::from_redis_value(entry).map_err(|_| bad("not [id, fields]"))?;
    let offset = id
        .split('-')
        .next()
        .and_then(|ms| ms.parse::<u64>().ok())
        .ok_or_else(|| bad("id is not <offset>-0"))?;
    let mut fields = fields.into_iter();
    while let Some(name) = fields.next() {
        let value = fields.next().ok_or_else(|| bad("odd field list"))?;
        if name == b"d" {
            return Ok((offset, Bytes::from(value)));
        }
    }
    Err(bad("no data field"))
}

/// A random epoch: 16 hex digits, offered to SET NX and kept only when the channel has none.
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(offsets: std::ops::RangeInclusive<u64>) -> Vec<(u64, Bytes)> {
        offsets.map(|o| (o, Bytes::from_static(b"1"))).collect()
    }

    #[test]
    fn complete_when_everything_after_since_is_retained() {
        assert!(is_complete(3, "e", "e", 6, &messages(4..=6)));
        assert!(is_complete(6, "e", "e", 6, &[]));
        assert!(is_complete(0, "", "", 0, &[]));
    }

    #[test]
    fn incomplete_on_epoch_change_gap_or_future_offset() {
        assert!(!is_complete(3, "old", "e", 6, &messages(4..=6)));
        assert!(!is_complete(3, "e", "e", 6, &messages(5..=6)));
        assert!(!is_complete(3, "e", "e", 6, &[]));
        assert!(!is_complete(9, "e", "e", 6, &[]));
    }
}
