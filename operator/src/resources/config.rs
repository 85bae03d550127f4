//! The gateway's configuration file (`gateway.toml`, the keys of the operator↔gateway contract)
//! and the immutable, content-named ConfigMap that carries it. The node id is not in the file: each pod gets `NODE_ID`
//! from its own name. The Redis URL and admin token arrive as environment variables.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{ADMIN_PORT, WS_PORT, config_map_name, owned_meta};
use crate::crd::{JwtAlgorithm, RedisMode, RefusalMode, SlowConsumerPolicy, WebSocketFleet};

/// ConfigMap key (and file name) of the gateway config.
pub const CONFIG_KEY: &str = "gateway.toml";
/// Where the config file is mounted in the gateway container.
pub const CONFIG_PATH: &str = "/etc/wsfleet/gateway.toml";
/// Directory where the JWT verification key Secret is mounted.
pub const JWT_DIR: &str = "/etc/wsfleet/jwt";
/// File name of the JWT key inside [`JWT_DIR`].
pub const JWT_FILE: &str = "key";

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
    file.bool("anonymous", spec.auth.anonymous);
    let algorithm = spec
        .auth
        .jwt
        .as_ref()
        .map(|j| j.algorithm)
        .unwrap_or_default();
    file.string(
        "jwt_algorithm",
        match algorithm {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
        },
    );
    file.string("jwt_key_file", &format!("{JWT_DIR}/{JWT_FILE}"));
    file.text
}

/// A flat TOML document built key by key.
#[derive(Default)]
struct TomlFile {
    text: String,
}

impl TomlFile {
    fn string(&mut self, key: &str, value: &str) {
        // JSON string escapes are a subset of TOML basic-string escapes.
        let quoted = serde_json::Value::String(value.to_string()).to_string();
        self.line(key, &quoted);
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
            "auth": {"jwt": {"algorithm": "ES256", "keySecretRef": {"name": "k", "key": "pem"}}}
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
        let cm = config_map(&fleet);
        assert_eq!(cm.metadata.name, Some(config_map_name(&fleet, &toml)));
        assert_eq!(cm.immutable, Some(true));
        assert_eq!(cm.data.expect("data")[CONFIG_KEY], toml);
        let other = config_map(&testing::minimal());
        assert_ne!(other.metadata.name, cm.metadata.name, "named by content");
    }
}
