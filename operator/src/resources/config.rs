//! The gateway's configuration file (`gateway.toml`, the keys of the operator↔gateway contract)
//! and the immutable, content-named ConfigMap that carries it. The node id is not in the file: each pod gets `NODE_ID`
//! from its own name. The Redis URL arrives as an environment variable; the tokens, the JWT key
//! and the Redis TLS files as mounted Secrets, whose paths are here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::secret::{ACCEPTED_KEY, TOKEN_KEY};
use super::{ADMIN_PORT, API_PORT, WS_PORT, config_map_name, owned_meta};
use crate::crd::{JwtAlgorithm, RedisMode, RefusalMode, SlowConsumerPolicy, WebSocketFleet};

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

/// Renders the gateway config for a fleet.
pub fn gateway_toml(fleet: &WebSocketFleet) -> String {
    let spec = &fleet.spec;
    let c = &spec.connections;
    let redis = spec.backplane.as_ref().map(|b| &b.redis);
    let mut file = TomlFile::default();
    file.string("listen", &format!("0.0.0.0:{WS_PORT}"));
    file.string("admin_listen", &format!("0.0.0.0:{ADMIN_PORT}"));
    file.string("api_listen", &format!("0.0.0.0:{API_PORT}"));
    file.int("max_connections", c.max_per_node.into());
    file.int(
        "heartbeat_interval_secs",
        c.heartbeat_interval_seconds.into(),
    );
    file.int(
        "heartbeat_timeout_secs",
        c.effective_heartbeat_timeout().into(),
    );
    file.int("max_message_bytes", c.max_message_bytes.into());
    file.int("send_queue_messages", c.send_queue_messages.into());
    file.string(
        "slow_consumer_policy",
        match c.slow_consumer_policy {
            SlowConsumerPolicy::Disconnect => "disconnect",
            SlowConsumerPolicy::DropOldest => "drop-oldest",
        },
    );
    file.int("handshakes_per_second", c.handshakes_per_second.into());
    file.string(
        "refusal_mode",
        match c.refusal_mode {
            RefusalMode::Status => "status",
            RefusalMode::Close1013 => "close-1013",
        },
    );
    file.int(
        "drain_window_secs",
        spec.drain.reconnect_window_seconds.into(),
    );
    file.int("drain_timeout_secs", spec.drain.timeout_seconds.into());
    // The URL itself comes from WSFLEET_REDIS_URL so a password never lands in a ConfigMap.
    file.string("redis_url", "");
    file.string(
        "redis_mode",
        match redis.map(|r| r.mode).unwrap_or_default() {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
        },
    );
    file.string(
        "key_prefix",
        redis.map(|r| r.key_prefix.as_str()).unwrap_or("wsfleet"),
    );
    if let Some(tls) = redis.and_then(|r| r.tls.as_ref()) {
        if tls.ca_secret_ref.is_some() {
            file.string(
                "redis_tls_ca_file",
                &format!("{REDIS_CA_DIR}/{REDIS_CA_FILE}"),
            );
        }
        if tls.client_certificate_secret_ref.is_some() {
            file.string(
                "redis_tls_cert_file",
                &format!("{REDIS_CLIENT_DIR}/tls.crt"),
            );
            file.string("redis_tls_key_file", &format!("{REDIS_CLIENT_DIR}/tls.key"));
        }
    }
    file.string(
        "drain_token_file",
        &format!("{DRAIN_TOKEN_DIR}/{TOKEN_KEY}"),
    );
    file.string(
        "publish_token_file",
        &format!("{PUBLISH_TOKEN_DIR}/{ACCEPTED_KEY}"),
    );
    file.bool("anonymous", spec.auth.anonymous);
    let jwt = spec.auth.jwt.as_ref();
    let algorithm = jwt.map(|j| j.algorithm).unwrap_or_default();
    file.string(
        "jwt_algorithm",
        match algorithm {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
        },
    );
    file.string("jwt_key_file", &format!("{JWT_DIR}/{JWT_FILE}"));
    if let Some(jwt) = jwt {
        if let Some(issuer) = &jwt.issuer {
            file.string("jwt_issuer", issuer);
        }
        if !jwt.audiences.is_empty() {
            file.strings("jwt_audiences", &jwt.audiences);
        }
        file.int("jwt_leeway_secs", jwt.leeway_seconds.into());
    }
    file.text
}

/// A TOML basic string. JSON string escapes are a subset of TOML's.
fn quote(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

/// A flat TOML document built key by key.
#[derive(Default)]
struct TomlFile {
    text: String,
}

impl TomlFile {
    fn string(&mut self, key: &str, value: &str) {
        self.line(key, &quote(value));
    }

    fn strings(&mut self, key: &str, values: &[String]) {
        let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
        self.line(key, &format!("[{}]", quoted.join(", ")));
    }

    fn int(&mut self, key: &str, value: i64) {
        self.line(key, &value.to_string());
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.line(key, if value { "true" } else { "false" });
    }

    fn line(&mut self, key: &str, value: &str) {
        self.text.push_str(key);
        self.text.push_str(" = ");
        self.text.push_str(value);
        self.text.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;

    fn lines(toml: &str) -> BTreeMap<&str, &str> {
        toml.lines().filter_map(|l| l.split_once(" = ")).collect()
    }

    #[test]
    fn defaults_render_the_contract_keys() {
        let toml = gateway_toml(&testing::minimal());
        let keys = lines(&toml);
        let expected = [
            ("listen", "\"0.0.0.0:8080\""),
            ("admin_listen", "\"0.0.0.0:9090\""),
            ("api_listen", "\"0.0.0.0:9091\""),
            ("max_connections", "100000"),
            ("heartbeat_interval_secs", "30"),
            ("heartbeat_timeout_secs", "60"),
            ("max_message_bytes", "65536"),
            ("send_queue_messages", "256"),
            ("slow_consumer_policy", "\"disconnect\""),
            ("handshakes_per_second", "2000"),
            ("refusal_mode", "\"status\""),
            ("drain_window_secs", "60"),
            ("drain_timeout_secs", "120"),
            ("redis_url", "\"\""),
            ("redis_mode", "\"standalone\""),
            ("key_prefix", "\"wsfleet\""),
            ("drain_token_file", "\"/etc/wsfleet/tokens/drain/token\""),
            (
                "publish_token_file",
                "\"/etc/wsfleet/tokens/publish/tokens\"",
            ),
            ("anonymous", "true"),
            ("jwt_algorithm", "\"HS256\""),
            ("jwt_key_file", "\"/etc/wsfleet/jwt/key\""),
        ];
        assert_eq!(keys.len(), expected.len(), "{toml}");
        for (key, value) in expected {
            assert_eq!(keys.get(key), Some(&value), "{key} in\n{toml}");
        }
    }

    #[test]
    fn spec_settings_reach_the_file() {
        let fleet = testing::fleet(serde_json::json!({
            "image": "gw:1",
            "connections": {"maxPerNode": 5000, "heartbeatIntervalSeconds": 10,
                "slowConsumerPolicy": "DropOldest", "refusalMode": "Close1013"},
            "backplane": {"redis": {"url": "redis://r:6379", "mode": "Cluster", "keyPrefix": "chat"}},
            "drain": {"reconnectWindowSeconds": 30, "timeoutSeconds": 90},
            "auth": {"jwt": {"algorithm": "ES256", "keySecretRef": {"name": "k", "key": "pem"},
                "issuer": "https://id.example.com/", "audiences": ["chat", "a\"b"], "leewaySeconds": 5}}
        }));
        let toml = gateway_toml(&fleet);
        let keys = lines(&toml);
        assert_eq!(keys["max_connections"], "5000");
        assert_eq!(keys["heartbeat_timeout_secs"], "20");
        assert_eq!(keys["slow_consumer_policy"], "\"drop-oldest\"");
        assert_eq!(keys["refusal_mode"], "\"close-1013\"");
        assert_eq!(keys["redis_mode"], "\"cluster\"");
        assert_eq!(
            keys["redis_url"], "\"\"",
            "URLs travel by env, not ConfigMap"
        );
        assert_eq!(keys["key_prefix"], "\"chat\"");
        assert_eq!(keys["drain_window_secs"], "30");
        assert_eq!(keys["drain_timeout_secs"], "90");
        assert_eq!(keys["anonymous"], "false");
        assert_eq!(keys["jwt_algorithm"], "\"ES256\"");
        assert_eq!(keys["jwt_issuer"], "\"https://id.example.com/\"");
        assert_eq!(keys["jwt_audiences"], r#"["chat", "a\"b"]"#);
        assert_eq!(keys["jwt_leeway_secs"], "5");
        assert!(!keys.contains_key("redis_tls_ca_file"), "no TLS asked for");
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
            gateway_toml(&testing::fleet(serde_json::json!({
                "image": "gw:1", "auth": {"anonymous": true},
                "backplane": {"redis": {"url": "rediss://r:6380", "tls": tls}}
            })))
        };
        let ca_only = with(serde_json::json!({"caSecretRef": {"name": "ca", "key": "ca.pem"}}));
        let keys = lines(&ca_only);
        assert_eq!(
            keys["redis_tls_ca_file"],
            "\"/etc/wsfleet/redis-tls/ca/ca.crt\""
        );
        assert!(!keys.contains_key("redis_tls_cert_file"));
        let both = with(
            serde_json::json!({"caSecretRef": {"name": "ca", "key": "ca.pem"},
            "clientCertificateSecretRef": {"name": "client"}}),
        );
        let keys = lines(&both);
        assert_eq!(
            keys["redis_tls_cert_file"],
            "\"/etc/wsfleet/redis-tls/client/tls.crt\""
        );
        assert_eq!(
            keys["redis_tls_key_file"],
            "\"/etc/wsfleet/redis-tls/client/tls.key\""
        );
        // System roots: nothing to name.
        assert!(!lines(&with(serde_json::json!({}))).contains_key("redis_tls_ca_file"));
    }
}
