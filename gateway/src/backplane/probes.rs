//! Which topics the liveness probe round-trips through. Standalone: the node channel. Cluster:
//! one topic per master (chosen so its hash slot lies on that master), because a cluster
//! subscription is really one connection per shard and each can stop delivering on its own.

use redis::Value;

use super::error::BackplaneError;
use super::keys::Keys;
use super::links::RedisConn;

/// Candidate suffixes tried per master; with 3 masters ~3 tries each are expected.
const MAX_CANDIDATES: u32 = 10_000;

/// The node channel plus one probe topic per master currently in the cluster.
pub(crate) async fn cluster_probe_topics(
    conn: &mut RedisConn,
    keys: &Keys,
) -> Result<Vec<String>, BackplaneError> {
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let masters = master_ranges(slots)?;
    Ok(topics_covering(keys, &masters))
}

/// For every master, a topic `<node channel>:probe:<n>` whose slot it owns.
fn topics_covering(keys: &Keys, masters: &[Vec<(u16, u16)>]) -> Vec<String> {
    let base = keys.own_node_channel();
    let mut topics = Vec::with_capacity(masters.len());
    for ranges in masters {
        let owned = |topic: &String| {
            let slot = key_slot(topic.as_bytes());
            ranges
                .iter()
                .any(|&(start, end)| (start..=end).contains(&slot))
        };
        if let Some(topic) = (0..MAX_CANDIDATES)
            .map(|n| format!("{base}:probe:{n}"))
            .find(owned)
        {
            topics.push(topic);
        }
    }
    topics
}

/// `CLUSTER SLOTS` → slot ranges grouped per master (by address).
fn master_ranges(reply: Value) -> Result<Vec<Vec<(u16, u16)>>, BackplaneError> {
    let bad = || BackplaneError::UnexpectedReply("CLUSTER SLOTS".into());
    let Value::Array(entries) = reply else {
        return Err(bad());
    };
    let mut masters: Vec<(String, Vec<(u16, u16)>)> = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(bad());
        };
        let (Some(start), Some(end), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let start: u16 = redis::from_redis_value_ref(start).map_err(|_| bad())?;
        let end: u16 = redis::from_redis_value_ref(end).map_err(|_| bad())?;
        let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
            return Err(bad());
        };
        let host: String = redis::from_redis_value_ref(host).map_err(|_| bad())?;
        let port: u16 = redis::from_redis_value_ref(port).map_err(|_| bad())?;
        let address = format!("{host}:{port}");
        match masters.iter_mut().find(|(a, _)| *a == address) {
            Some((_, ranges)) => ranges.push((start, end)),
            None => masters.push((address, vec![(start, end)])),
        }
    }
    Ok(masters.into_iter().map(|(_, ranges)| ranges).collect())
}

/// Redis Cluster's hash slot of a key: CRC16/XMODEM of the hash tag (or the whole key) mod
/// 16384. (redis-rs computes it too but does not expose the number.)
fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The part between the first `{` and the next `}`, when non-empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn key_slot_matches_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        for key in ["wsfleet:node:n1:probe:7", "a{b}c", "{}x", "x{"] {
            assert_eq!(
                Slot::for_key(key),
                Slot::new(key_slot(key.as_bytes())).unwrap(),
                "{key}"
            );
        }
    }

    #[test]
    fn one_probe_topic_per_master() {
        let keys = Keys::new("wsfleet", "n1");
        let masters = vec![vec![(0, 5460)], vec![(5461, 10922)], vec![(10923, 16383)]];
        let topics = topics_covering(&keys, &masters);
        assert_eq!(topics.len(), 3);
        for (topic, ranges) in topics.iter().zip(&masters) {
            let slot = key_slot(topic.as_bytes());
            assert!((ranges[0].0..=ranges[0].1).contains(&slot), "{topic}");
        }
    }
}
