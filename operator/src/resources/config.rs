//! The gateway's configuration file (`gateway.toml`) and the immutable, content-named ConfigMap
//! that carries it. The file is the contract crate's [`GatewayConfig`] serialized, the very
//! struct the gateway reads (refusing keys it does not know), so the two sides cannot drift.
//! The node id is not in the file: each pod gets `NODE_ID` from its own name. The Redis URL
//! arrives as an environment variable; the tokens, the JWT key and the Redis TLS files as
//! mounted Secrets, whose paths are here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::secret::{ACCEPTED_KEY, TOKEN_KEY};
use super::{ADMIN_PORT, API_PORT, WS_PORT, config_map_name, owned_meta};
use crate::crd::{JwtAlgorithm, RedisMode, RefusalMode, SlowConsumerPolicy, WebSocketFleet};
use wsfleet_api::config::{self as api, GatewayConfig};

/// ConfigMap key (and file name) of the gateway config.
pub const CONFIG_KEY: &str = "gateway.toml";
/// Where the config file is mounted in the gateway container.
pub const CONFIG_PATH: &str = "/etc/wsfleet/gateway.toml";
/// Directory where the JWT verification key Secret is mounted.
pub const JWT_DIR: &str = "/etc/wsfleet/jwt";
/// File name of the JWT key inside [`JWT_DIR`].
pub const JWT_FILE: &str = "key";
/// Directory where the drain-token Secret is mounted (file `token`).
pub const DRAIN_TOKEN_DIR: &str = "/etc/wsfleet/tokens/drain";
/// Directory where the publish-token Secret is mounted (file `tokens`: every accepted token).
pub const PUBLISH_TOKEN_DIR: &str = "/etc/wsfleet/tokens/publish";
/// Directory where the Redis CA bundle Secret key is mounted (file `ca.crt`).
pub const REDIS_CA_DIR: &str = "/etc/wsfleet/redis-tls/ca";
/// File name of the CA bundle inside [`REDIS_CA_DIR`].
pub const REDIS_CA_FILE: &str = "ca.crt";
/// Directory where the Redis client certificate Secret (`kubernetes.io/tls`) is mounted.
pub const REDIS_CLIENT_DIR: &str = "/etc/wsfleet/redis-tls/client";

/// The immutable ConfigMap holding the fleet's current `gateway.toml`.
pub fn config_map(fleet: &WebSocketFleet) -> ConfigMap {
    let toml = gateway_toml(fleet);
    ConfigMap {
        metadata: owned_meta(fleet, config_map_name(fleet, &toml)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), toml)])),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

/// The gateway config for a fleet.
pub fn gateway_config(fleet: &WebSocketFleet) -> GatewayConfig {
    let spec = &fleet.spec;
    let c = &spec.connections;
    let redis = spec.backplane.as_ref().map(|b| &b.redis);
    let tls = redis.and_then(|r| r.tls.as_ref());
    let jwt = spec.auth.jwt.as_ref();
    let listen = |port: i32| {
        let port = u16::try_from(port).unwrap_or_default();
        Some(std::net::SocketAddr::from(([0, 0, 0, 0], port)))
    };
    let count = |n: i32| Some(usize::try_from(n).unwrap_or_default());
    let secs = |n: i32| Some(u64::try_from(n).unwrap_or_default());
    let path = |dir: &str, file: &str| Some(format!("{dir}/{file}").into());
    GatewayConfig {
        listen: listen(WS_PORT),
        admin_listen: listen(ADMIN_PORT),
        api_listen: listen(API_PORT),
        max_connections: count(c.max_per_node),
        heartbeat_interval_secs: secs(c.heartbeat_interval_seconds),
        heartbeat_timeout_secs: secs(c.effective_heartbeat_timeout()),
        max_message_bytes: count(c.max_message_bytes),
        send_queue_messages: count(c.send_queue_messages),
        slow_consumer_policy: Some(match c.slow_consumer_policy {
            SlowConsumerPolicy::Disconnect => api::SlowConsumerPolicy::Disconnect,
            SlowConsumerPolicy::DropOldest => api::SlowConsumerPolicy::DropOldest,
        }),
        handshakes_per_second: Some(u32::try_from(c.handshakes_per_second).unwrap_or_default()),
        refusal_mode: Some(match c.refusal_mode {
            RefusalMode::Status => api::RefusalMode::Status,
            RefusalMode::Close1013 => api::RefusalMode::Close1013,
        }),
        idempotency_window_secs: secs(c.idempotency_window_seconds),
        drain_window_secs: secs(spec.drain.reconnect_window_seconds),
        drain_timeout_secs: secs(spec.drain.timeout_seconds),
        // The URL itself comes from WSFLEET_REDIS_URL so a password never lands in a ConfigMap.
        redis_url: None,
        redis_mode: Some(match redis.map(|r| r.mode).unwrap_or_default() {
            RedisMode::Standalone => api::RedisMode::Standalone,
            RedisMode::Cluster => api::RedisMode::Cluster,
        }),
        redis_tls_ca_file: tls
            .and_then(|t| t.ca_secret_ref.as_ref())
            .and_then(|_| path(REDIS_CA_DIR, REDIS_CA_FILE)),
        redis_tls_cert_file: tls
            .and_then(|t| t.client_certificate_secret_ref.as_ref())
            .and_then(|_| path(REDIS_CLIENT_DIR, "tls.crt")),
        redis_tls_key_file: tls
            .and_then(|t| t.client_certificate_secret_ref.as_ref())
            .and_then(|_| path(REDIS_CLIENT_DIR, "tls.key")),
        key_prefix: Some(
            redis
                .map_or("wsfleet", |r| r.key_prefix.as_str())
                .to_owned(),
        ),
        anonymous: Some(spec.auth.anonymous),
        jwt_algorithm: Some(match jwt.map(|j| j.algorithm).unwrap_or_default() {
            JwtAlgorithm::HS256 => api::JwtAlgorithm::HS256,
            JwtAlgorithm::RS256 => api::JwtAlgorithm::RS256,
            JwtAlgorithm::ES256 => api::JwtAlgorithm::ES256,
        }),
        jwt_key_file: path(JWT_DIR, JWT_FILE),
        jwt_issuer: jwt.and_then(|j| j.issuer.clone()),
        jwt_audiences: jwt.map(|j| j.audiences.clone()).filter(|a| !a.is_empty()),
        jwt_leeway_secs: jwt.and_then(|j| secs(j.leeway_seconds)),
        drain_token_file: path(DRAIN_TOKEN_DIR, TOKEN_KEY),
        publish_token_file: path(PUBLISH_TOKEN_DIR, ACCEPTED_KEY),
        ..GatewayConfig::default()
    }
}

/// The gateway config file's text for a fleet.
pub fn gateway_toml(fleet: &WebSocketFleet) -> String {
    // Serializing a struct of strings, numbers, paths and arrays of strings cannot fail.
    toml::to_string(&gateway_config(fleet)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;

    /// The file as the gateway reads it.
    fn read(toml: &str) -> GatewayConfig {
        toml::from_str(toml).unwrap_or_else(|e| panic!("the gateway refuses\n{toml}\n{e}"))
    }

    #[test]
    fn defaults_render_the_contract_keys() {
        let config = read(&gateway_toml(&testing::minimal()));
        let expected = GatewayConfig {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            admin_listen: Some("0.0.0.0:9090".parse().unwrap()),
            api_listen: Some("0.0.0.0:9091".parse().unwrap()),
            max_connections: Some(100_000),
            heartbeat_interval_secs: Some(30),
            heartbeat_timeout_secs: Some(60),
            max_message_bytes: Some(65536),
            send_queue_messages: Some(256),
            slow_consumer_policy: Some(api::SlowConsumerPolicy::Disconnect),
            handshakes_per_second: Some(2000),
            refusal_mode: Some(api::RefusalMode::Status),
            drain_window_secs: Some(60),
            drain_timeout_secs: Some(120),
            idempotency_window_secs: Some(300),
            redis_mode: Some(api::RedisMode::Standalone),
            key_prefix: Some("wsfleet".into()),
            drain_token_file: Some("/etc/wsfleet/tokens/drain/token".into()),
            publish_token_file: Some("/etc/wsfleet/tokens/publish/tokens".into()),
            anonymous: Some(true),
            jwt_algorithm: Some(api::JwtAlgorithm::HS256),
            jwt_key_file: Some("/etc/wsfleet/jwt/key".into()),
            ..GatewayConfig::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn spec_settings_reach_the_file() {
        let fleet = testing::fleet(serde_json::json!({
            "image": "gw:1",
            "connections": {"maxPerNode": 5000, "heartbeatIntervalSeconds": 10,
                "slowConsumerPolicy": "DropOldest", "refusalMode": "Close1013",
                "idempotencyWindowSeconds": 900},
            "backplane": {"redis": {"url": "redis://r:6379", "mode": "Cluster", "keyPrefix": "chat"}},
            "drain": {"reconnectWindowSeconds": 30, "timeoutSeconds": 90},
            "auth": {"jwt": {"algorithm": "ES256", "keySecretRef": {"name": "k", "key": "pem"},
                "issuer": "https://id.example.com/", "audiences": ["chat", "a\"b"], "leewaySeconds": 5}}
        }));
        let toml = gateway_toml(&fleet);
        let config = read(&toml);
        assert_eq!(config.max_connections, Some(5000));
        assert_eq!(config.heartbeat_timeout_secs, Some(20));
        assert_eq!(config.idempotency_window_secs, Some(900));
        assert_eq!(
            config.slow_consumer_policy,
            Some(api::SlowConsumerPolicy::DropOldest)
        );
        assert_eq!(config.refusal_mode, Some(api::RefusalMode::Close1013));
        assert_eq!(config.redis_mode, Some(api::RedisMode::Cluster));
        assert_eq!(config.redis_url, None, "URLs travel by env, not ConfigMap");
        assert!(!toml.contains("redis://"));
        assert_eq!(config.key_prefix.as_deref(), Some("chat"));
        assert_eq!(
            (config.drain_window_secs, config.drain_timeout_secs),
            (Some(30), Some(90))
        );
        assert_eq!(config.anonymous, Some(false));
        assert_eq!(config.jwt_algorithm, Some(api::JwtAlgorithm::ES256));
        assert_eq!(
            config.jwt_issuer.as_deref(),
            Some("https://id.example.com/")
        );
        assert_eq!(
            config.jwt_audiences,
            Some(vec!["chat".into(), "a\"b".into()])
        );
        assert_eq!(config.jwt_leeway_secs, Some(5));
        assert_eq!(config.redis_tls_ca_file, None, "no TLS asked for");
        let cm = config_map(&fleet);
        assert_eq!(cm.metadata.name, Some(config_map_name(&fleet, &toml)));
        assert_eq!(cm.immutable, Some(true));
        assert_eq!(cm.data.expect("data")[CONFIG_KEY], toml);
        let other = config_map(&testing::minimal());
        assert_ne!(other.metadata.name, cm.metadata.name, "named by content");
    }

    #[test]
    fn redis_tls_files_are_named_only_when_their_secrets_are() {
        let with = |tls: serde_json::Value| {
            read(&gateway_toml(&testing::fleet(serde_json::json!({
                "image": "gw:1", "auth": {"anonymous": true},
                "backplane": {"redis": {"url": "rediss://r:6380", "tls": tls}}
            }))))
        };
        let ca_only = with(serde_json::json!({"caSecretRef": {"name": "ca", "key": "ca.pem"}}));
        assert_eq!(
            ca_only.redis_tls_ca_file,
            Some("/etc/wsfleet/redis-tls/ca/ca.crt".into())
        );
        assert_eq!(ca_only.redis_tls_cert_file, None);
        let both = with(
            serde_json::json!({"caSecretRef": {"name": "ca", "key": "ca.pem"},
            "clientCertificateSecretRef": {"name": "client"}}),
        );
        assert_eq!(
            both.redis_tls_cert_file,
            Some("/etc/wsfleet/redis-tls/client/tls.crt".into())
        );
        assert_eq!(
            both.redis_tls_key_file,
            Some("/etc/wsfleet/redis-tls/client/tls.key".into())
        );
        // System roots: nothing to name.
        assert_eq!(with(serde_json::json!({})).redis_tls_ca_file, None);
    }
}
