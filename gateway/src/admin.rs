//! The admin port: health, readiness, Prometheus metrics and status for the operator and
//! Kubernetes probes, and the drain control (`POST`/`DELETE /drain`), which only the drain
//! token opens. App services publish on their own port ([`crate::api`]) with their own token,
//! so neither credential can do the other's job.

use crate::credentials::Credential;
use crate::drain::{Drain, DrainRequest};
use crate::metrics::metrics;
use crate::node::Node;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;
use wsfleet_api::admin::{ApiError, DrainProgress, DrainReply, StatusReport};

/// The admin router for a node.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .route("/drain", post(start_drain).delete(cancel_drain))
        .with_state(node)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics_text(State(node): State<Arc<Node>>) -> Response {
    metrics().set_backplane(node.engine.backplane().as_str());
    if let Some(stats) = node.engine.backplane_stats() {
        metrics().set_backplane_stats(&stats);
    }
    let draining = !node.serving();
    metrics().draining.set(i64::from(draining));
    let remaining = if draining { node.connections() } else { 0 };
    metrics()
        .drain_remaining
        .set(i64::try_from(remaining).unwrap_or(i64::MAX));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
        .into_response()
}

async fn status(State(node): State<Arc<Node>>) -> Response {
    let phase = node.lifecycle.phase();
    // Why the backplane is not up, in the words of the last failed attempt: an operator
    // reading /status of a not-ready node sees "invalid peer certificate" rather than guessing.
    let backplane_error = node.engine.backplane_stats().and_then(|s| s.last_error);
    axum::Json(StatusReport {
        node: node.config.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        state: phase.state(),
        ready: node.ready(),
        connections: count(node.connections()),
        max_connections: count(node.config.max_connections),
        backplane: node.engine.backplane(),
        backplane_error,
        drain: phase.drain().map(|d| progress(&node, d)),
        settings: Some(node.config.settings()),
    })
    .into_response()
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The `drain` object of `/status` and of the drain endpoints.
fn progress(node: &Node, drain: &Drain) -> DrainProgress {
    DrainProgress {
        reason: drain.reason.to_string(),
        window_seconds: drain.window.as_secs(),
        deadline_unix_ms: drain.deadline_unix_ms,
        remaining: count(node.connections()),
    }
}

/// `POST /drain`: starts a drain, or returns the one under way unchanged (idempotent).
/// `202` when this request started it, `200` when one was already running.
async fn start_drain(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: DrainRequest = match authorize_and_parse(&node, Scope::Drain, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if let Err(message) = request.check() {
        return error(StatusCode::BAD_REQUEST, "bad_request", &message);
    }
    let begun = node.drain(&request);
    let status = if begun.started {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let reply = DrainReply {
        state: node.state(),
        started: begun.started,
        drain: Some(progress(&node, &begun.drain)),
    };
    (status, axum::Json(reply)).into_response()
}

/// `DELETE /drain`: cancels a drain; the node serves again. Clients already told to
/// reconnect still leave at their time. `409` once the deadline passed or the drain ended.
async fn cancel_drain(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    if let Err(response) = authorize(&node, Scope::Drain, &headers) {
        return *response;
    }
    match node.lifecycle.cancel() {
        Ok(()) => {
            tracing::info!("drain cancelled");
            let reply = DrainReply {
                state: node.state(),
                started: false,
                drain: None,
            };
            axum::Json(reply).into_response()
        }
        Err(err) => error(StatusCode::CONFLICT, "conflict", &err.to_string()),
    }
}

/// Which credential a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Drain,
    Publish,
}

impl Scope {
    fn credential(self, node: &Node) -> &Credential {
        match self {
            Scope::Drain => &node.drain_token,
            Scope::Publish => &node.publish_token,
        }
    }

    fn other(self) -> Scope {
        match self {
            Scope::Drain => Scope::Publish,
            Scope::Publish => Scope::Drain,
        }
    }
}

/// Checks the token for `scope` and the body size, then parses the JSON body.
pub(crate) fn authorize_and_parse<T: for<'de> Deserialize<'de>>(
    node: &Node,
    scope: Scope,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Box<Response>> {
    authorize(node, scope, headers)?;
    if body.len() > node.config.max_message_bytes {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!(
                "body is larger than {} bytes",
                node.config.max_message_bytes
            ),
        ));
    }
    parse_body(body).map_err(|message| refuse(StatusCode::BAD_REQUEST, "bad_request", &message))
}

/// Parses an admin or API request body; errors are a message for the caller.
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| format!("invalid body: {err}"))
}

/// Requires `Authorization: Bearer <token of scope>`: `401` without a token or with an unknown
/// one, `403` with the other scope's token (it is valid, just not for this), so a caller sees
/// at once that it holds the wrong credential. Without a configured token every request is
/// refused, so a forgotten secret never opens an endpoint.
fn authorize(node: &Node, scope: Scope, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let credential = scope.credential(node);
    if !credential.configured() {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &format!("no {} token is configured on this node", credential.scope),
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if credential.accepts(given) {
        return Ok(());
    }
    let other = scope.other().credential(node);
    if other.accepts(given) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!(
                "this is the {} token; this endpoint takes the {} token",
                other.scope, credential.scope
            ),
        ));
    }
    Err(refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        &format!("missing or wrong {} token", credential.scope),
    ))
}

pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Box<Response> {
    Box::new(error(status, code, message))
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ApiError {
        code: code.to_owned(),
        message: message.to_owned(),
    };
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_drain_bodies() {
        let body: DrainRequest =
            parse_body(br#"{"window_seconds":30,"deadline_seconds":60,"reason":"r"}"#).unwrap();
        assert_eq!(body.check(), Ok(()));
        assert!(parse_body::<DrainRequest>(b"\xff").is_err());
    }
}
