//! The publish API port, for app services that publish without a WebSocket: `POST
//! /api/v1/publish` (to a channel, fleet-wide) and `POST /api/v1/send` (to one client, wherever
//! it is connected). Only the publish token opens it. It is a port of its own so that a
//! NetworkPolicy can let app namespaces reach it without letting them reach the admin port.

use crate::admin::{Scope, authorize_and_parse, error};
use crate::node::Node;
use crate::protocol::{validate_channel, validate_client_id, validate_idempotency_key};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::Arc;
use wsfleet_api::admin::{PublishReply, PublishRequest, SendRequest};

/// The `from` of `direct` frames sent through the API.
pub const API_SENDER: &str = "server";

/// The API router for a node.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/api/v1/publish", post(publish))
        .route("/api/v1/send", post(send))
        .with_state(node)
}

/// Body of `POST /api/v1/publish`; the payload stays the caller's JSON text.
pub type PublishBody = PublishRequest<Box<RawValue>>;

/// Body of `POST /api/v1/send`.
pub type SendBody = SendRequest<Box<RawValue>>;

async fn publish(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: PublishBody = match authorize_and_parse(&node, Scope::Publish, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let key = request.idempotency_key.as_deref();
    if let Err(err) = validate_channel(&request.channel)
        .and_then(|()| key.map_or(Ok(()), validate_idempotency_key))
    {
        return error(StatusCode::BAD_REQUEST, err.code.as_str(), &err.message);
    }
    match node
        .engine
        .publish(&request.channel, &request.data, key)
        .await
    {
        Ok(published) => axum::Json(PublishReply {
            offset: published.position.offset,
            epoch: published.position.epoch.to_string(),
            duplicate: published.duplicate,
        })
        .into_response(),
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            err.code().as_str(),
            &err.to_string(),
        ),
    }
}

async fn send(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: SendBody = match authorize_and_parse(&node, Scope::Publish, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if let Err(err) = validate_client_id(&request.to) {
        return error(StatusCode::BAD_REQUEST, err.code.as_str(), &err.message);
    }
    match node
        .engine
        .send(API_SENDER, &request.to, &request.data)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::parse_body;

    #[test]
    fn parses_api_bodies() {
        let body: PublishBody = parse_body(br#"{"channel":"c","data":{"a":1}}"#).unwrap();
        assert_eq!(
            (body.channel.as_str(), body.data.get()),
            ("c", r#"{"a":1}"#)
        );
        assert!(parse_body::<PublishBody>(br#"{"channel":"c"}"#).is_err());
        assert!(parse_body::<SendBody>(b"\xff").is_err());
    }
}
