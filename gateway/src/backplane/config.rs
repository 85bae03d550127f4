//! Backplane settings: where Redis is, how keys are named, and how long history, registry
//! entries and presence live.

use redis::TlsCertificates;
use std::time::Duration;

/// How the gateway talks to Redis: one server (PUBLISH/SUBSCRIBE) or Redis Cluster (sharded
/// pub/sub, SPUBLISH/SSUBSCRIBE, keys routed by hash slot).
pub use wsfleet_api::RedisMode;

#[derive(Debug, Clone)]
pub struct BackplaneConfig {
    /// `redis://host:port/` (or `rediss://`). In cluster mode a comma-separated list of seed
    /// node URLs is accepted.
    pub url: String,
    pub mode: RedisMode,
    /// CA bundle and client certificate for `rediss://` URLs; `None` = the system's roots and
    /// no client certificate. Server certificates are always verified.
    pub tls: Option<TlsCertificates>,
    /// Every key and topic starts with `<key_prefix>:`. Must not contain `{` or `}` (hash tags).
    pub key_prefix: String,
    /// This gateway node's id: names its direct channel, registry values and presence key.
    pub node_id: String,
    /// Channel history keeps about this many messages (trimmed with `MAXLEN ~`).
    pub history_max_len: u64,
    /// Channel history drops messages older than this (trimmed on publish); zero disables the
    /// age bound.
    pub history_max_age: Duration,
    /// The node's liveness key and its presence expire after this unless refreshed (every
    /// third of it): a node that dies has its clients stop resolving within this time.
    pub registry_ttl: Duration,
    /// How often the node rewrites all its clients' registry entries (which live three times
    /// as long). Between rewrites an idle connection costs Redis nothing: the entries stay
    /// valid through the node's liveness key, one write per node per tick. Also rewritten at
    /// once when the liveness key was found missing (Redis lost its data, or the node could
    /// not refresh it in time).
    pub registry_refresh: Duration,
    /// How long a publish's idempotency key is remembered.
    pub idempotency_window: Duration,
    /// How often the liveness probe round-trips through the node channel.
    pub probe_interval: Duration,
    /// A probe not echoed back within this is a failed subscription.
    pub probe_timeout: Duration,
}

impl BackplaneConfig {
    /// A configuration with the default bounds: 1,000 messages / 5 minutes of history, a 60 s
    /// liveness TTL, registry entries rewritten every 15 minutes, a probe every second with a
    /// 3 s deadline.
    pub fn new(url: impl Into<String>, mode: RedisMode, key_prefix: &str, node_id: &str) -> Self {
        Self {
            url: url.into(),
            mode,
            tls: None,
            key_prefix: key_prefix.to_string(),
            node_id: node_id.to_string(),
            history_max_len: 1000,
            history_max_age: Duration::from_secs(300),
            registry_ttl: Duration::from_secs(60),
            registry_refresh: Duration::from_secs(15 * 60),
            idempotency_window: Duration::from_secs(300),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(3),
        }
    }

    /// How long a registry entry lives: three full rewrites, so one or two failed ones lose
    /// nothing.
    pub(crate) fn entry_ttl(&self) -> Duration {
        self.registry_refresh.saturating_mul(3)
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(String::from)
            .collect()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        match (self.mode, self.urls().len()) {
            (_, 0) => return Err("redis url is empty".into()),
            (RedisMode::Standalone, n) if n > 1 => {
                return Err("standalone mode takes one redis url (a list is for cluster)".into());
            }
            _ => {}
        }
        if self.tls.is_some() && !self.urls().iter().all(|url| url.starts_with("rediss://")) {
            return Err("TLS certificates are set but the redis url is not rediss://".into());
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err("key_prefix must not contain '{' or '}'".into());
        }
        if self.node_id.is_empty() {
            return Err("node_id is empty".into());
        }
        if self.history_max_len == 0 {
            return Err("history_max_len must be at least 1".into());
        }
        if self.registry_ttl < Duration::from_secs(3) {
            return Err("registry_ttl must be at least 3 seconds".into());
        }
        if self.registry_refresh < self.registry_ttl {
            return Err("registry_refresh must be at least registry_ttl".into());
        }
        if self.probe_interval.is_zero() || self.probe_timeout.is_zero() {
            return Err("probe_interval and probe_timeout must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> BackplaneConfig {
        BackplaneConfig::new(
            "redis://127.0.0.1:6379/",
            RedisMode::Standalone,
            "wsfleet",
            "n1",
        )
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_rejected_with_a_reason() {
        type Breakage = Box<dyn Fn(&mut BackplaneConfig)>;
        let cases: Vec<(&str, Breakage)> = vec![
            ("empty url", Box::new(|c| c.url = " , ".into())),
            (
                "url list in standalone",
                Box::new(|c| c.url = "redis://a/,redis://b/".into()),
            ),
            ("brace in prefix", Box::new(|c| c.key_prefix = "a{b".into())),
            ("empty node id", Box::new(|c| c.node_id.clear())),
            ("zero history", Box::new(|c| c.history_max_len = 0)),
            (
                "tiny ttl",
                Box::new(|c| c.registry_ttl = Duration::from_millis(10)),
            ),
            ("zero probe", Box::new(|c| c.probe_timeout = Duration::ZERO)),
            (
                "certificates for plain text",
                Box::new(|c| {
                    c.tls = Some(TlsCertificates {
                        client_tls: None,
                        root_cert: None,
                    })
                }),
            ),
        ];
        for (name, break_it) in cases {
            let mut config = valid();
            break_it(&mut config);
            assert!(config.validate().is_err(), "{name}");
        }
        let mut cluster = valid();
        cluster.mode = RedisMode::Cluster;
        cluster.url = "redis://a:1/, redis://b:2/".into();
        assert_eq!(cluster.validate(), Ok(()));
        assert_eq!(cluster.urls(), vec!["redis://a:1/", "redis://b:2/"]);
    }
}
