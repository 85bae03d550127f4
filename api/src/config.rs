//! `gateway.toml`: the file the operator renders into each fleet's ConfigMap and the gateway
//! reads at start. Every key is optional (the gateway has a default for each, and its flags and
//! environment variables win over the file). An unknown key is refused, not ignored: a key
//! renamed on one side must fail the node's start, not quietly give it a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The gateway's config file. Field names are the file's keys; the gateway's flags are the
/// same names in kebab-case and its environment variables `WSFLEET_` + SCREAMING_SNAKE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_queue_messages: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_consumer_policy: Option<SlowConsumerPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshakes_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_mode: Option<RefusalMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_window_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_secs: Option<u64>,
    /// The operator never writes it: the URL may carry a password, so it travels by the
    /// environment (`WSFLEET_REDIS_URL`) and never lands in a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_mode: Option<RedisMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_tls_ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_tls_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_tls_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_max_messages: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_max_age_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_window_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_audiences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_leeway_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_token_file: Option<PathBuf>,
}

/// Most clock skew a node tolerates on client tokens (`jwt_leeway_secs`), in seconds.
pub const MAX_JWT_LEEWAY_SECS: u64 = 300;

/// Defines a config enum with its one spelling per value, used by serde, `FromStr` (the
/// gateway's flags and environment) and `Display`.
macro_rules! spelled {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as the file, flags and environment spell it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| {
                        let known: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                        format!("`{text}` is not one of {}", known.join(", "))
                    })
            }
        }
    };
}

spelled! {
    /// Which Redis deployment the backplane talks to.
    RedisMode {
        Standalone = "standalone",
        /// Redis Cluster, with sharded pub/sub.
        Cluster = "cluster",
    }
}

spelled! {
    /// How a refused upgrade (cap, handshake budget, drain) is answered.
    RefusalMode {
        /// An HTTP status (`503`/`429`) with `Retry-After`, before the upgrade.
        Status = "status",
        /// Accept the upgrade, then close with 1013 and a reason carrying the retry hint (for
        /// browsers, which cannot read a refused handshake's status).
        Close1013 = "close-1013",
    }
}

spelled! {
    /// What happens to a client whose send queue is full.
    SlowConsumerPolicy {
        /// Close it with 1008; it reconnects and resumes from history.
        Disconnect = "disconnect",
        /// Drop its oldest queued message to make room.
        DropOldest = "drop-oldest",
    }
}

spelled! {
    /// Signature algorithm of client tokens.
    JwtAlgorithm {
        HS256 = "HS256",
        RS256 = "RS256",
        ES256 = "ES256",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_read_and_write_one_spelling() {
        for (text, mode) in [
            ("status", RefusalMode::Status),
            ("close-1013", RefusalMode::Close1013),
        ] {
            assert_eq!(text.parse::<RefusalMode>(), Ok(mode));
            assert_eq!(mode.to_string(), text);
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{text}\""));
        }
        assert_eq!("drop-oldest".parse(), Ok(SlowConsumerPolicy::DropOldest));
        assert_eq!("cluster".parse(), Ok(RedisMode::Cluster));
        assert_eq!("ES256".parse(), Ok(JwtAlgorithm::ES256));
        assert_eq!(
            "Cluster".parse::<RedisMode>(),
            Err("`Cluster` is not one of standalone, cluster".to_string())
        );
    }

    #[test]
    fn a_file_round_trips_and_unset_keys_are_left_out() {
        let config = GatewayConfig {
            max_connections: Some(5000),
            refusal_mode: Some(RefusalMode::Close1013),
            jwt_audiences: Some(vec!["app".into()]),
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..GatewayConfig::default()
        };
        let text = toml::to_string(&config).unwrap();
        assert_eq!(
            text,
            "listen = \"0.0.0.0:8080\"\nmax_connections = 5000\nrefusal_mode = \"close-1013\"\n\
             jwt_audiences = [\"app\"]\n"
        );
        assert_eq!(toml::from_str::<GatewayConfig>(&text).unwrap(), config);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = toml::from_str::<GatewayConfig>("max_conections = 10\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_conections`"),
            "{err}"
        );
        let err = toml::from_str::<GatewayConfig>("redis_mode = \"Cluster\"\n").unwrap_err();
        assert!(err.to_string().contains("Cluster"), "{err}");
    }
}
