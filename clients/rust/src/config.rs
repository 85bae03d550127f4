//! How a client reaches the fleet and behaves when a connection is lost.

use std::future::Future;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::token::TokenSource;

/// How to reach the fleet and how to behave when a connection is lost.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// WebSocket URLs (`ws://host:8080/ws`), tried round-robin on each (re)connect.
    pub endpoints: Vec<String>,
    /// A JWT sent as `Authorization: Bearer`; `None` for anonymous gateways.
    pub token: Option<String>,
    /// Where fresh JWTs come from; replaces `token` when set. Asked at every (re)connect and
    /// ahead of each expiry, so the connection never lapses (see [`crate::token`]).
    pub token_callback: Option<TokenSource>,
    pub backoff: Backoff,
    /// Longest wait for TCP connect + WebSocket handshake + `welcome`, per attempt.
    pub connect_timeout: Duration,
    /// Longest wait for an `ack` before an operation fails with [`Error::Timeout`].
    pub request_timeout: Duration,
    /// Consecutive failed attempts after which the client gives up; `None` retries forever.
    pub max_reconnect_attempts: Option<u32>,
    /// Largest message accepted from the gateway.
    pub max_message_bytes: usize,
}

impl ClientConfig {
    pub fn new<I, S>(endpoints: I) -> ClientConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            token: None,
            token_callback: None,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_reconnect_attempts: None,
            max_message_bytes: 1 << 20,
        }
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Fresh tokens from `fetch` (e.g. the application's identity provider), for every
    /// connection attempt and for refreshing a live connection before its token expires.
    pub fn token_callback<F, Fut, E>(mut self, fetch: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.token_callback = Some(TokenSource::new(fetch));
        self
    }

    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = Backoff { base, cap };
        self
    }
}
