//! The admin port: health, readiness, Prometheus metrics and status for the operator and
//! Kubernetes probes, the token-protected drain control (`POST`/`DELETE /drain`), and the
//! token-protected publish/send API for app services that publish without a WebSocket.

use crate::drain::{Drain, DrainBody, DrainRequest};
use crate::metrics::metrics;
use crate::node::Node;
use crate::protocol::{validate_channel, validate_client_id};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::Arc;

/// The `from` of `direct` frames sent through the admin API.
pub const ADMIN_SENDER: &str = "server";

/// The admin router for a node.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .route("/drain", post(start_drain).delete(cancel_drain))
        .route("/api/v1/publish", post(publish))
        .route("/api/v1/send", post(send))
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
    axum::Json(json!({
        "node": node.config.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "state": phase.state().as_str(),
        "ready": node.ready(),
        "connections": node.connections(),
        "max_connections": node.config.max_connections,
        "backplane": node.engine.backplane().as_str(),
        "backplane_error": backplane_error,
        "drain": phase.drain().map(|d| drain_json(&node, d)),
    }))
    .into_response()
}

/// The `drain` object of `/status` and of the drain endpoints.
fn drain_json(node: &Node, drain: &Drain) -> serde_json::Value {
    json!({
        "reason": &*drain.reason,
        "window_seconds": drain.window.as_secs(),
        "deadline_unix_ms": drain.deadline_unix_ms,
        "remaining": node.connections(),
    })
}

/// `POST /drain`: starts a drain, or returns the one under way unchanged (idempotent).
/// `202` when this request started it, `200` when one was already running.
async fn start_drain(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: DrainBody = match authorize_and_parse(&node, &headers, &body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let request = match DrainRequest::from_body(body) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    let begun = node.drain(&request);
    let status = if begun.started {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let body = json!({
        "state": node.state().as_str(),
        "started": begun.started,
        "drain": drain_json(&node, &begun.drain),
    });
    (status, axum::Json(body)).into_response()
}

/// `DELETE /drain`: cancels a drain; the node serves again. Clients already told to
/// reconnect still leave at their time. `409` once the deadline passed or the drain ended.
async fn cancel_drain(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    if let Err(response) = authorize(&node, &headers) {
        return *response;
    }
    match node.lifecycle.cancel() {
        Ok(()) => {
            tracing::info!("drain cancelled");
            axum::Json(json!({ "state": node.state().as_str(), "drain": null })).into_response()
        }
        Err(err) => error(StatusCode::CONFLICT, "conflict", &err.to_string()),
    }
}

/// Body of `POST /api/v1/publish`.
#[derive(Debug, Deserialize)]
pub struct PublishBody {
    pub channel: String,
    pub data: Box<RawValue>,
}

/// Body of `POST /api/v1/send`.
#[derive(Debug, Deserialize)]
pub struct SendBody {
    pub to: String,
    pub data: Box<RawValue>,
}

async fn publish(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: PublishBody = match authorize_and_parse(&node, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if let Err(err) = validate_channel(&request.channel) {
        return error(StatusCode::BAD_REQUEST, err.code.as_str(), &err.message);
    }
    match node.engine.publish(&request.channel, &request.data).await {
        Ok(position) => axum::Json(json!({
            "offset": position.offset,
            "epoch": &*position.epoch,
        }))
        .into_response(),
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            err.code().as_str(),
            &err.to_string(),
        ),
    }
}

async fn send(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: SendBody = match authorize_and_parse(&node, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if let Err(err) = validate_client_id(&request.to) {
        return error(StatusCode::BAD_REQUEST, err.code.as_str(), &err.message);
    }
    match node
        .engine
        .send(ADMIN_SENDER, &request.to, &request.data)
        .await
    {
        Ok(()) => axum::Json(json!({ "delivered": true })).into_response(),
        Err(err @ crate::engine::EngineError::ClientNotFound(_)) => {
            error(StatusCode::NOT_FOUND, err.code().as_str(), &err.to_string())
        }
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            err.code().as_str(),
            &err.to_string(),
        ),
    }
}

/// Checks the admin token and the body size, then parses the JSON body.
fn authorize_and_parse<T: for<'de> Deserialize<'de>>(
    node: &Node,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Box<Response>> {
    authorize(node, headers)?;
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

/// Parses an admin request body; errors are a message for the caller.
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| format!("invalid body: {err}"))
}

/// Requires `Authorization: Bearer <admin token>`. Without a configured token every request
/// is refused, so a forgotten secret never opens the API.
fn authorize(node: &Node, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(expected) = node.config.admin_token.as_deref() else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no admin token is configured on this node",
        )));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token",
        ))
    }
}

/// Compares without an early exit, so response time does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Box<Response> {
    Box::new(error(status, code, message))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_bodies() {
        let body: PublishBody = parse_body(br#"{"channel":"c","data":{"a":1}}"#).unwrap();
        assert_eq!(
            (body.channel.as_str(), body.data.get()),
            ("c", r#"{"a":1}"#)
        );
        assert!(parse_body::<PublishBody>(br#"{"channel":"c"}"#).is_err());
        assert!(parse_body::<SendBody>(b"\xff").is_err());
    }

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
