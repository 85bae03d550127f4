//! Node configuration from flags, environment variables and a TOML file, with the precedence
//! flag > environment > file > default. Every key of the file is also a `--kebab-case` flag and
//! a `WSFLEET_SCREAMING_SNAKE` variable (the operator mounts the file at
//! /etc/wsfleet/gateway.toml).

use crate::credentials::TokenSource;
use anyhow::{Context, bail};
use clap::Parser;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wsfleet_api::admin::{MAX_DRAIN_DEADLINE_SECONDS, MAX_DRAIN_WINDOW_SECONDS};
use wsfleet_api::config::{GatewayConfig, MAX_JWT_LEEWAY_SECS};
pub use wsfleet_api::{JwtAlgorithm, RedisMode, RefusalMode, SlowConsumerPolicy};

/// Command line of `wsfleet-gateway`. Every setting is optional here: unset ones come from
/// the config file, then the built-in default.
#[derive(Debug, Default, Parser)]
#[command(
    name = "wsfleet-gateway",
    version,
    about = "WebSocket gateway node of a wsfleet fleet",
    long_about = "WebSocket gateway node of a wsfleet fleet.\n\nEvery setting can be given as a flag, \
                  an environment variable, or a key of the TOML config file; a flag wins over the \
                  environment, which wins over the file, which wins over the default."
)]
pub struct Args {
    /// TOML config file whose keys are the settings below in snake_case.
    #[arg(long, env = "WSFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id in the fleet, shown to clients and in /status. Env NODE_ID (set by the
    /// operator from the pod name) is also read. [default: the hostname]
    #[arg(long, env = "WSFLEET_NODE_ID")]
    pub node_id: Option<String>,
    /// Address of the WebSocket listener (`GET /ws`). [default: 0.0.0.0:8080]
    #[arg(long, env = "WSFLEET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (health, metrics, status, drain). [default: 0.0.0.0:9090]
    #[arg(long, env = "WSFLEET_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Address of the publish API listener (`POST /api/v1/publish|send` for app services);
    /// opened only when a publish token is configured. [default: 0.0.0.0:9091]
    #[arg(long, env = "WSFLEET_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Most WebSocket connections this node holds; beyond it upgrades are refused and /readyz
    /// is false. [default: 100000]
    #[arg(long, env = "WSFLEET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds between WebSocket pings to each client. [default: 30]
    #[arg(long, env = "WSFLEET_HEARTBEAT_INTERVAL_SECS")]
    pub heartbeat_interval_secs: Option<u64>,
    /// A connection from which nothing (pong or frame) arrived for this many seconds is
    /// closed. [default: 2 x heartbeat_interval_secs]
    #[arg(long, env = "WSFLEET_HEARTBEAT_TIMEOUT_SECS")]
    pub heartbeat_timeout_secs: Option<u64>,
    /// Largest client message in bytes; larger ones close the connection with 1009. [default: 65536]
    #[arg(long, env = "WSFLEET_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Frames queued per connection before the slow-consumer policy applies. [default: 256]
    #[arg(long, env = "WSFLEET_SEND_QUEUE_MESSAGES")]
    pub send_queue_messages: Option<usize>,
    /// What happens to a client whose send queue is full: `disconnect` (close 1008) or
    /// `drop-oldest`. [default: disconnect]
    #[arg(long, env = "WSFLEET_SLOW_CONSUMER_POLICY")]
    pub slow_consumer_policy: Option<SlowConsumerPolicy>,
    /// Upgrades per second this node accepts (token bucket, bursts up to one second's worth);
    /// beyond it upgrades are refused with 429. [default: 2000]
    #[arg(long, env = "WSFLEET_HANDSHAKES_PER_SECOND")]
    pub handshakes_per_second: Option<u32>,
    /// Seconds a client has to complete the WebSocket handshake. [default: 10]
    #[arg(long, env = "WSFLEET_HANDSHAKE_TIMEOUT_SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// How refusals (cap, budget, drain) are answered: `status` (HTTP 503/429 + Retry-After) or
    /// `close-1013` (accept, then close 1013 with a reason). [default: status]
    #[arg(long, env = "WSFLEET_REFUSAL_MODE")]
    pub refusal_mode: Option<RefusalMode>,
    /// Reconnect window in seconds used when SIGTERM starts a drain. [default: 60]
    #[arg(long, env = "WSFLEET_DRAIN_WINDOW_SECS")]
    pub drain_window_secs: Option<u64>,
    /// A drain ends (the process exits) after this many seconds at the latest. [default: 120]
    #[arg(long, env = "WSFLEET_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// Redis URL of the backplane; empty = the in-process single-node engine. [default: ""]
    #[arg(long, env = "WSFLEET_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// `standalone` or `cluster` (sharded pub/sub). [default: standalone]
    #[arg(long, env = "WSFLEET_REDIS_MODE")]
    pub redis_mode: Option<RedisMode>,
    /// PEM bundle of the CAs that sign the Redis server certificates (`rediss://` only).
    /// Unset = the system's trusted roots. Server certificates are always verified.
    #[arg(long, env = "WSFLEET_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for Redis servers that require one (`tls-auth-clients`);
    /// needs redis_tls_key_file.
    #[arg(long, env = "WSFLEET_REDIS_TLS_CERT_FILE")]
    pub redis_tls_cert_file: Option<PathBuf>,
    /// PEM private key of redis_tls_cert_file.
    #[arg(long, env = "WSFLEET_REDIS_TLS_KEY_FILE")]
    pub redis_tls_key_file: Option<PathBuf>,
    /// Prefix of every Redis key and channel. [default: wsfleet]
    #[arg(long, env = "WSFLEET_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// Most messages of history kept per channel for resuming subscribers. [default: 1000]
    #[arg(long, env = "WSFLEET_HISTORY_MAX_MESSAGES")]
    pub history_max_messages: Option<usize>,
    /// Channel history older than this many seconds is dropped; 0 = no age bound. [default: 300]
    #[arg(long, env = "WSFLEET_HISTORY_MAX_AGE_SECS")]
    pub history_max_age_secs: Option<u64>,
    /// Seconds a publish's `idempotency_key` is remembered: a retry with the same key within it
    /// is answered with the first publish's offset and delivers nothing new. [default: 300]
    #[arg(long, env = "WSFLEET_IDEMPOTENCY_WINDOW_SECS")]
    pub idempotency_window_secs: Option<u64>,
    /// Accept clients without a token, each with a random client id (development only).
    /// [default: false]
    #[arg(long, env = "WSFLEET_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub anonymous: Option<bool>,
    /// Signature algorithm of client JWTs: HS256, RS256 or ES256. [default: HS256]
    #[arg(long, env = "WSFLEET_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// File with the HS256 secret or the PEM public key for RS256/ES256, or a JWKS document
    /// (`{"keys": [...]}`, keys chosen by the token's `kid`). Re-read while the node runs.
    /// [default: /etc/wsfleet/jwt/key]
    #[arg(long, env = "WSFLEET_JWT_KEY_FILE")]
    pub jwt_key_file: Option<PathBuf>,
    /// Required `iss` of client tokens. [default: not checked]
    #[arg(long, env = "WSFLEET_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accepted `aud` values of client tokens (comma-separated); a token must name one of them.
    /// [default: not checked]
    #[arg(long, env = "WSFLEET_JWT_AUDIENCES", value_delimiter = ',')]
    pub jwt_audiences: Option<Vec<String>>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (also how long past `exp` a live
    /// connection may stay before it is closed). [default: 30]
    #[arg(long, env = "WSFLEET_JWT_LEEWAY_SECS")]
    pub jwt_leeway_secs: Option<u64>,
    /// File with the token that authorizes `POST`/`DELETE /drain` (the operator's), re-read
    /// while the node runs. WSFLEET_DRAIN_TOKEN, when set, is used instead (fixed). Without
    /// either, drains can only come from SIGTERM.
    #[arg(long, env = "WSFLEET_DRAIN_TOKEN_FILE")]
    pub drain_token_file: Option<PathBuf>,
    /// File with the tokens (one per line) that authorize the publish API, re-read while the
    /// node runs. WSFLEET_PUBLISH_TOKEN, when set, is used instead (fixed). Without either,
    /// the publish API refuses every request.
    #[arg(long, env = "WSFLEET_PUBLISH_TOKEN_FILE")]
    pub publish_token_file: Option<PathBuf>,
}

/// The resolved settings of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub max_connections: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub max_message_bytes: usize,
    pub send_queue_messages: usize,
    pub slow_consumer_policy: SlowConsumerPolicy,
    pub handshakes_per_second: u32,
    pub handshake_timeout: Duration,
    pub refusal_mode: RefusalMode,
    pub drain_window: Duration,
    pub drain_timeout: Duration,
    pub redis_url: String,
    pub redis_mode: RedisMode,
    /// TLS material for `rediss://`; `None` when no file is configured.
    pub redis_tls: Option<RedisTls>,
    pub key_prefix: String,
    pub history_max_messages: usize,
    /// Zero = no age bound.
    pub history_max_age: Duration,
    /// How long a publish's idempotency key is remembered.
    pub idempotency_window: Duration,
    pub anonymous: bool,
    pub jwt_algorithm: JwtAlgorithm,
    pub jwt_key_file: PathBuf,
    pub jwt_issuer: Option<String>,
    /// Empty = `aud` not checked.
    pub jwt_audiences: Vec<String>,
    pub jwt_leeway: Duration,
    /// Where the drain token comes from.
    pub drain_token: TokenSource,
    /// Where the publish tokens come from.
    pub publish_token: TokenSource,
}

impl Config {
    /// Resolves the settings from the process's arguments, environment and config file.
    pub fn load() -> anyhow::Result<Config> {
        let args = Args::parse();
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Config::resolve(args, env)
    }

    /// Merges flags/environment (already in `args`), the file they name, and defaults.
    /// `env` reads the variables that are not plain flag mirrors.
    pub fn resolve(args: Args, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => GatewayConfig::default(),
        };
        let heartbeat_interval_secs = args
            .heartbeat_interval_secs
            .or(file.heartbeat_interval_secs)
            .unwrap_or(30);
        let heartbeat_timeout_secs = args
            .heartbeat_timeout_secs
            .or(file.heartbeat_timeout_secs)
            .unwrap_or(2 * heartbeat_interval_secs);
        let token_source = |variable: &str, path: Option<PathBuf>| match (env(variable), path) {
            (Some(token), _) => TokenSource::Fixed(token),
            (None, Some(path)) => TokenSource::File(path),
            (None, None) => TokenSource::None,
        };
        let drain_token = token_source(
            "WSFLEET_DRAIN_TOKEN",
            args.drain_token_file.or(file.drain_token_file),
        );
        let publish_token = token_source(
            "WSFLEET_PUBLISH_TOKEN",
            args.publish_token_file.or(file.publish_token_file),
        );
        let node_id = args
            .node_id
            .or_else(|| env("NODE_ID"))
            .or(file.node_id)
            .or_else(|| env("HOSTNAME"))
            .or_else(hostname)
            .unwrap_or_else(|| "wsfleet-node".to_owned());
        let config = Config {
            node_id,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080))),
            admin_listen: args
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9090))),
            api_listen: args
                .api_listen
                .or(file.api_listen)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9091))),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(100_000),
            heartbeat_interval: Duration::from_secs(heartbeat_interval_secs),
            heartbeat_timeout: Duration::from_secs(heartbeat_timeout_secs),
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(65536),
            send_queue_messages: args
                .send_queue_messages
                .or(file.send_queue_messages)
                .unwrap_or(256),
            slow_consumer_policy: args
                .slow_consumer_policy
                .or(file.slow_consumer_policy)
                .unwrap_or(SlowConsumerPolicy::Disconnect),
            handshakes_per_second: args
                .handshakes_per_second
                .or(file.handshakes_per_second)
                .unwrap_or(2000),
            handshake_timeout: Duration::from_secs(
                args.handshake_timeout_secs
                    .or(file.handshake_timeout_secs)
                    .unwrap_or(10),
            ),
            refusal_mode: args
                .refusal_mode
                .or(file.refusal_mode)
                .unwrap_or(RefusalMode::Status),
            drain_window: Duration::from_secs(
                args.drain_window_secs
                    .or(file.drain_window_secs)
                    .unwrap_or(60),
            ),
            drain_timeout: Duration::from_secs(
                args.drain_timeout_secs
                    .or(file.drain_timeout_secs)
                    .unwrap_or(120),
            ),
            redis_url: args.redis_url.or(file.redis_url).unwrap_or_default(),
            redis_mode: args
                .redis_mode
                .or(file.redis_mode)
                .unwrap_or(RedisMode::Standalone),
            redis_tls: RedisTls::load(
                args.redis_tls_ca_file.or(file.redis_tls_ca_file),
                args.redis_tls_cert_file.or(file.redis_tls_cert_file),
                args.redis_tls_key_file.or(file.redis_tls_key_file),
            )?,
            key_prefix: args
                .key_prefix
                .or(file.key_prefix)
                .unwrap_or_else(|| "wsfleet".to_owned()),
            history_max_messages: args
                .history_max_messages
                .or(file.history_max_messages)
                .unwrap_or(1000),
            history_max_age: Duration::from_secs(
                args.history_max_age_secs
                    .or(file.history_max_age_secs)
                    .unwrap_or(300),
            ),
            idempotency_window: Duration::from_secs(
                args.idempotency_window_secs
                    .or(file.idempotency_window_secs)
                    .unwrap_or(300),
            ),
            anonymous: args.anonymous.or(file.anonymous).unwrap_or(false),
            jwt_algorithm: args
                .jwt_algorithm
                .or(file.jwt_algorithm)
                .unwrap_or(JwtAlgorithm::HS256),
            jwt_key_file: args
                .jwt_key_file
                .or(file.jwt_key_file)
                .unwrap_or_else(|| PathBuf::from("/etc/wsfleet/jwt/key")),
            jwt_issuer: args.jwt_issuer.or(file.jwt_issuer),
            jwt_audiences: args
                .jwt_audiences
                .or(file.jwt_audiences)
                .unwrap_or_default(),
            jwt_leeway: Duration::from_secs(
                args.jwt_leeway_secs.or(file.jwt_leeway_secs).unwrap_or(30),
            ),
            drain_token,
            publish_token,
        };
        config.check()?;
        Ok(config)
    }

    /// Rejects settings the node cannot run with.
    fn check(&self) -> anyhow::Result<()> {
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_timeout.is_zero() {
            bail!("heartbeat_interval_secs and heartbeat_timeout_secs must be at least 1");
        }
        if self.max_message_bytes < 64 {
            bail!("max_message_bytes must be at least 64");
        }
        if self.send_queue_messages == 0 {
            bail!("send_queue_messages must be at least 1");
        }
        if self.handshakes_per_second == 0 {
            bail!("handshakes_per_second must be at least 1");
        }
        if self.handshake_timeout.is_zero() {
            bail!("handshake_timeout_secs must be at least 1");
        }
        if self.drain_window.is_zero() {
            bail!("drain_window_secs must be at least 1");
        }
        if self.drain_window > Duration::from_secs(MAX_DRAIN_WINDOW_SECONDS) {
            bail!("drain_window_secs must be at most {MAX_DRAIN_WINDOW_SECONDS}");
        }
        if self.drain_timeout > Duration::from_secs(MAX_DRAIN_DEADLINE_SECONDS) {
            bail!("drain_timeout_secs must be at most {MAX_DRAIN_DEADLINE_SECONDS}");
        }
        if self.drain_timeout < self.drain_window {
            bail!("drain_timeout_secs must be at least drain_window_secs");
        }
        if self.node_id.is_empty() {
            bail!("node_id must not be empty");
        }
        if self.jwt_leeway > Duration::from_secs(MAX_JWT_LEEWAY_SECS) {
            bail!("jwt_leeway_secs must be at most {MAX_JWT_LEEWAY_SECS}");
        }
        if self.jwt_audiences.iter().any(String::is_empty) || self.jwt_issuer.as_deref() == Some("")
        {
            bail!("jwt_issuer and jwt_audiences must not be empty strings");
        }
        if self.idempotency_window.is_zero() {
            bail!("idempotency_window_secs must be at least 1");
        }
        if self.history_max_messages == 0 {
            bail!("history_max_messages must be at least 1");
        }
        if self.redis_tls.is_some()
            && !self
                .redis_url
                .split(',')
                .all(|url| url.trim().starts_with("rediss://"))
        {
            bail!(
                "redis_tls_* files are set but redis_url is not rediss:// (TLS material for a \
                 plain-text connection would be ignored)"
            );
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            bail!("key_prefix must be non-empty and must not contain '{{' or '}}'");
        }
        Ok(())
    }

    /// The heartbeat interval in milliseconds, as told to clients in `welcome`.
    pub fn heartbeat_ms(&self) -> u64 {
        u64::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// The settings as resolved, in the config file's keys, every one filled in (`/status`
    /// reports them). The Redis URL is left out: it may carry a password.
    pub fn settings(&self) -> GatewayConfig {
        let token_file = |source: &TokenSource| match source {
            TokenSource::File(path) => Some(path.clone()),
            TokenSource::None | TokenSource::Fixed(_) => None,
        };
        let [ca, cert, key] = self
            .redis_tls
            .as_ref()
            .map(|t| t.files.clone())
            .unwrap_or_default();
        GatewayConfig {
            node_id: Some(self.node_id.clone()),
            listen: Some(self.listen),
            admin_listen: Some(self.admin_listen),
            api_listen: Some(self.api_listen),
            max_connections: Some(self.max_connections),
            heartbeat_interval_secs: Some(self.heartbeat_interval.as_secs()),
            heartbeat_timeout_secs: Some(self.heartbeat_timeout.as_secs()),
            max_message_bytes: Some(self.max_message_bytes),
            send_queue_messages: Some(self.send_queue_messages),
            slow_consumer_policy: Some(self.slow_consumer_policy),
            handshakes_per_second: Some(self.handshakes_per_second),
            handshake_timeout_secs: Some(self.handshake_timeout.as_secs()),
            refusal_mode: Some(self.refusal_mode),
            drain_window_secs: Some(self.drain_window.as_secs()),
            drain_timeout_secs: Some(self.drain_timeout.as_secs()),
            redis_url: None,
            redis_mode: Some(self.redis_mode),
            redis_tls_ca_file: ca,
            redis_tls_cert_file: cert,
            redis_tls_key_file: key,
            key_prefix: Some(self.key_prefix.clone()),
            history_max_messages: Some(self.history_max_messages),
            history_max_age_secs: Some(self.history_max_age.as_secs()),
            idempotency_window_secs: Some(self.idempotency_window.as_secs()),
            anonymous: Some(self.anonymous),
            jwt_algorithm: Some(self.jwt_algorithm),
            jwt_key_file: Some(self.jwt_key_file.clone()),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audiences: Some(self.jwt_audiences.clone()),
            jwt_leeway_secs: Some(self.jwt_leeway.as_secs()),
            drain_token_file: token_file(&self.drain_token),
            publish_token_file: token_file(&self.publish_token),
        }
    }
}

/// PEM files for TLS to Redis, read at start. A CA bundle replaces the system roots; a client
/// certificate and its key go together.
#[derive(Clone, Default)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// The files they were read from (CA, certificate, key), as `/status` reports them.
    pub files: [Option<PathBuf>; 3],
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisTls {
    fn load(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> anyhow::Result<Option<RedisTls>> {
        if cert.is_some() != key.is_some() {
            bail!("redis_tls_cert_file and redis_tls_key_file go together: set both or neither");
        }
        if ca.is_none() && cert.is_none() {
            return Ok(None);
        }
        let files = [ca.clone(), cert.clone(), key.clone()];
        let read = |path: Option<PathBuf>, what: &str| -> anyhow::Result<Option<Vec<u8>>> {
            let Some(path) = path else { return Ok(None) };
            let pem = std::fs::read(&path)
                .with_context(|| format!("reading the Redis TLS {what} {}", path.display()))?;
            if !pem.windows(10).any(|w| w == b"-----BEGIN") {
                bail!("the Redis TLS {what} {} is not PEM", path.display());
            }
            Ok(Some(pem))
        };
        Ok(Some(RedisTls {
            ca_pem: read(ca, "CA bundle")?,
            client_cert_pem: read(cert, "client certificate")?,
            client_key_pem: read(key, "client key")?,
            files,
        }))
    }
}

/// Reads the config file. A key this version does not know is an error that names it: a key
/// misspelled or renamed on the operator's side must stop the node, not leave a setting at
/// its default unnoticed.
fn read_file(path: &Path) -> anyhow::Result<GatewayConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// Reads a secret file, without surrounding whitespace (files made by `echo` end in `\n`).
pub fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading secret file {}", path.display()))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        bail!("secret file {} is empty", path.display());
    }
    Ok(secret)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = std::env::temp_dir().join(format!("wsfleet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            "max_connections = 5\nheartbeat_interval_secs = 7\nslow_consumer_policy = \"drop-oldest\"\nrefusal_mode = \"close-1013\"\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "wsfleet-gateway",
            "--config",
            path.to_str().unwrap(),
            "--max-connections",
            "9",
            "--node-id",
            "n1",
        ])
        .unwrap();
        let config = Config::resolve(args, no_env).unwrap();
        assert_eq!(config.max_connections, 9);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(7));
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(14));
        assert_eq!(config.slow_consumer_policy, SlowConsumerPolicy::DropOldest);
        assert_eq!(config.refusal_mode, RefusalMode::Close1013);
        assert_eq!(config.send_queue_messages, 256);
        assert_eq!(config.node_id, "n1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_key_in_the_file_stops_the_node_and_is_named() {
        let dir = std::env::temp_dir().join(format!("wsfleet-unknown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, "max_conections = 5000\n").unwrap();
        let args = Args::try_parse_from(["wsfleet-gateway", "--config", path.to_str().unwrap()]);
        let err = Config::resolve(args.unwrap(), no_env).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("unknown field `max_conections`"), "{text}");
        assert!(text.contains("gateway.toml"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_report_every_resolved_key_but_the_redis_url() {
        let args = Args::try_parse_from([
            "wsfleet-gateway",
            "--anonymous",
            "--redis-url",
            "redis://:secret@r:6379/",
            "--drain-token-file",
            "/d",
        ])
        .unwrap();
        let settings = Config::resolve(args, no_env).unwrap().settings();
        assert_eq!(settings.redis_url, None);
        assert_eq!(settings.max_connections, Some(100_000));
        assert_eq!(
            settings.slow_consumer_policy,
            Some(SlowConsumerPolicy::Disconnect)
        );
        assert_eq!(settings.drain_token_file, Some("/d".into()));
        assert_eq!(settings.publish_token_file, None);
        let text = toml::to_string(&settings).unwrap();
        assert!(!text.contains("secret"));
        assert_eq!(toml::from_str::<GatewayConfig>(&text).unwrap(), settings);
    }

    #[test]
    fn node_id_env_and_token_sources() {
        let args = Args::try_parse_from([
            "wsfleet-gateway",
            "--anonymous",
            "--drain-token-file",
            "/d",
            "--publish-token-file",
            "/p",
        ])
        .unwrap();
        let env = |name: &str| match name {
            "NODE_ID" => Some("pod-0".to_owned()),
            "WSFLEET_PUBLISH_TOKEN" => Some("t".to_owned()),
            _ => None,
        };
        let config = Config::resolve(args, env).unwrap();
        assert_eq!(config.node_id, "pod-0");
        assert_eq!(config.drain_token, TokenSource::File("/d".into()));
        assert_eq!(config.publish_token, TokenSource::Fixed("t".into()));
        assert!(config.anonymous);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let args = Args::try_parse_from(["wsfleet-gateway", "--max-connections", "0"]).unwrap();
        let err = Config::resolve(args, no_env).unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
        assert!(Args::try_parse_from(["wsfleet-gateway", "--refusal-mode", "nope"]).is_err());
    }

    #[test]
    fn redis_tls_files_need_a_rediss_url_and_go_in_pairs() {
        let dir = std::env::temp_dir().join(format!("wsfleet-tls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("ca.crt");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let not_pem = dir.join("junk");
        std::fs::write(&not_pem, "hello").unwrap();
        let resolve = |args: &[&str]| {
            let mut all = vec!["wsfleet-gateway", "--anonymous"];
            all.extend_from_slice(args);
            Config::resolve(Args::try_parse_from(all).unwrap(), no_env)
        };
        let ca = pem.to_str().unwrap();
        let config =
            resolve(&["--redis-url", "rediss://r:6380/", "--redis-tls-ca-file", ca]).unwrap();
        assert!(config.redis_tls.is_some_and(|t| t.ca_pem.is_some()));
        let cases: [(&[&str], &str); 4] = [
            (
                &["--redis-url", "redis://r:6379/", "--redis-tls-ca-file", ca],
                "not rediss://",
            ),
            (
                &["--redis-url", "rediss://r/", "--redis-tls-cert-file", ca],
                "go together",
            ),
            (
                &[
                    "--redis-url",
                    "rediss://r/",
                    "--redis-tls-ca-file",
                    not_pem.to_str().unwrap(),
                ],
                "not PEM",
            ),
            (
                &[
                    "--redis-url",
                    "rediss://r/",
                    "--redis-tls-ca-file",
                    "/nonexistent",
                ],
                "reading",
            ),
        ];
        for (args, expected) in cases {
            let err = format!("{:#}", resolve(args).unwrap_err());
            assert!(err.contains(expected), "{args:?}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
