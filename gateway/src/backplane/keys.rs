//! Redis key and topic names. All keys of one channel share the hash tag `{ch:<name>}` so that
//! the publish and history scripts touch a single hash slot in Redis Cluster.

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    node_id: String,
    /// This run of the node (random per process), so entries left by an earlier run of a node
    /// of the same name (a restarted container) do not resolve to the new one.
    incarnation: String,
}

/// The four keys of one channel, in the order the scripts expect them.
pub(crate) struct ChannelKeys {
    pub seq: String,
    pub epoch: String,
    pub hist: String,
    pub live: String,
}

const LIVE_SUFFIX: &str = "}:live";

impl Keys {
    pub fn new(prefix: &str, node_id: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            incarnation: String::new(),
        }
    }

    /// The same keys for a run of the node named `incarnation`.
    pub fn with_incarnation(mut self, incarnation: String) -> Self {
        self.incarnation = incarnation;
        self
    }

    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn channel(&self, channel: &str) -> ChannelKeys {
        let base = format!("{}:{{ch:{channel}}}", self.prefix);
        ChannelKeys {
            seq: format!("{base}:seq"),
            epoch: format!("{base}:epoch"),
            hist: format!("{base}:hist"),
            live: format!("{base}:live"),
        }
    }

    /// The record of an idempotency key of `channel` (in the channel's hash slot).
    pub fn idempotency(&self, channel: &str, key: &str) -> String {
        format!("{}:{{ch:{channel}}}:idem:{key}", self.prefix)
    }

    /// The channel name of a live topic, or `None` for any other topic.
    pub fn channel_of_live_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        let rest = rest.strip_prefix(":{ch:")?;
        rest.strip_suffix(LIVE_SUFFIX)
    }

    /// The pub/sub channel a node listens on for direct messages and its own probes.
    pub fn node_channel(&self, node_id: &str) -> String {
        format!("{}:node:{node_id}", self.prefix)
    }

    pub fn own_node_channel(&self) -> String {
        self.node_channel(&self.node_id)
    }

    /// Registry entry: client id → id of the node holding its connection.
    pub fn client(&self, client_id: &str) -> String {
        format!("{}:client:{client_id}", self.prefix)
    }

    /// Liveness of a node: holds the incarnation of its current run, with a short TTL.
    pub fn alive(&self, node_id: &str) -> String {
        format!("{}:alive:{node_id}", self.prefix)
    }

    pub fn presence(&self, node_id: &str) -> String {
        format!("{}:presence:{node_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_keys_share_one_hash_tag() {
        let keys = Keys::new("wsfleet", "n1").channel("news/eu");
        for key in [&keys.seq, &keys.epoch, &keys.hist, &keys.live] {
            assert!(key.starts_with("wsfleet:{ch:news/eu}:"), "{key}");
        }
    }

    #[test]
    fn live_topic_round_trips_to_channel_name() {
        let keys = Keys::new("wsfleet", "n1");
        let topic = keys.channel("a:b.c").live;
        assert_eq!(keys.channel_of_live_topic(&topic), Some("a:b.c"));
        assert_eq!(keys.channel_of_live_topic("wsfleet:node:n1"), None);
        assert_eq!(keys.channel_of_live_topic("other:{ch:x}:live"), None);
    }
}
