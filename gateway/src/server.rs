//! The WebSocket listener: accepts TCP connections and runs each upgrade through admission —
//! drain state, the connection cap, the handshake budget and authentication — before a
//! connection task takes over. Refusals are an HTTP status with `Retry-After`, or (in
//! `close-1013` refusal mode) an accepted upgrade closed at once with 1013 and a reason.

use crate::auth::{AuthError, Identity};
use crate::config::RefusalMode;
use crate::connection;
use crate::metrics::metrics;
use crate::node::{ConnSlot, Node};
use crate::wire::Wire;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Seconds a client refused at the cap or while draining is told to wait (it should add
/// jitter; see docs/protocol.md).
const RETRY_AFTER_FULL_SECS: u64 = 5;
/// Seconds a client refused by the handshake budget is told to wait.
const RETRY_AFTER_RATE_SECS: u64 = 1;

/// Why an upgrade was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotFound,
    Draining,
    AtCapacity,
    RateLimited,
    Unauthorized,
    Forbidden,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::Draining | Refusal::AtCapacity => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    fn retry_after(self) -> Option<u64> {
        match self {
            Refusal::Draining | Refusal::AtCapacity => Some(RETRY_AFTER_FULL_SECS),
            Refusal::RateLimited => Some(RETRY_AFTER_RATE_SECS),
            _ => None,
        }
    }

    /// Label of the handshakes metric.
    fn label(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::Draining => "draining",
            Refusal::AtCapacity => "at_capacity",
            Refusal::RateLimited => "rate_limited",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden => "forbidden",
        }
    }

    /// Whether `close-1013` mode turns this refusal into an accepted-then-closed upgrade.
    /// Authentication failures always stay HTTP errors.
    fn load_shedding(self) -> bool {
        matches!(
            self,
            Refusal::Draining | Refusal::AtCapacity | Refusal::RateLimited
        )
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::NotFound => "not found",
            Refusal::Draining => "node is draining",
            Refusal::AtCapacity => "node is at capacity",
            Refusal::RateLimited => "handshake rate limit",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden => "forbidden",
        }
    }
}

/// What admission decided for one upgrade.
enum Admission {
    Admitted(ConnSlot, Identity),
    Refused(Refusal),
}

/// The WebSocket settings of every connection: small buffers keep idle connections lean
/// (tungstenite's default read buffer is 128 KiB, allocated eagerly). Channel and direct
/// messages bypass tungstenite's write buffer ([`crate::wire`]); it only carries replies and
/// control frames, is allocated on first use and keeps its largest size, so it stays small.
pub fn websocket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(2048)
        .max_write_buffer_size(4 * max_message_bytes.max(64 * 1024))
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Accepts connections until the process ends. Accept errors (e.g. out of file descriptors)
/// are logged and retried after a pause rather than ending the node.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(Arc::clone(&node), stream));
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs one connection from handshake to close.
// The callback's error type is fixed by tungstenite's `Callback` trait.
#[allow(clippy::result_large_err)]
async fn handle(node: Arc<Node>, stream: TcpStream) {
    let mut admission = None;
    let callback = |request: &Request, response: Response| {
        let decision = admit(&node, request);
        let reply = match &decision {
            Admission::Refused(refusal)
                if !(refusal.load_shedding()
                    && node.config.refusal_mode == RefusalMode::Close1013) =>
            {
                Err(refusal_response(*refusal))
            }
            _ => Ok(response),
        };
        admission = Some(decision);
        reply
    };
    let config = websocket_config(node.config.max_message_bytes);
    // Boxed so the (large) handshake state is freed once the upgrade is done, instead of
    // sizing every connection's task for it.
    let handshake = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
        Wire::new(stream),
        callback,
        Some(config),
    ));
    let result = tokio::time::timeout(node.config.handshake_timeout, handshake).await;
    let mut ws = match result {
        Ok(Ok(ws)) => ws,
        Ok(Err(_)) => {
            let label = match &admission {
                Some(Admission::Refused(refusal)) => refusal.label(),
                _ => "failed",
            };
            metrics().handshake(label);
            return;
        }
        Err(_) => {
            metrics().handshake("timeout");
            return;
        }
    };
    match admission {
        Some(Admission::Admitted(slot, identity)) => {
            metrics().handshake("accepted");
            // A task of its own, sized for the connection only: this one (with the
            // handshake's state) ends here.
            tokio::spawn(connection::run(slot, ws, identity));
        }
        Some(Admission::Refused(refusal)) => {
            metrics().handshake(refusal.label());
            let reason = format!(
                "{}; retry after {}s",
                refusal.reason(),
                refusal.retry_after().unwrap_or(RETRY_AFTER_FULL_SECS)
            );
            ws.get_mut().release();
            let frame = CloseFrame {
                code: CloseCode::Again,
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
        }
        None => metrics().handshake("failed"),
    }
}

/// Decides whether an upgrade request may become a connection.
fn admit(node: &Arc<Node>, request: &Request) -> Admission {
    if request.uri().path() != "/ws" {
        return Admission::Refused(Refusal::NotFound);
    }
    if !node.serving() {
        return Admission::Refused(Refusal::Draining);
    }
    if node.connections() >= node.config.max_connections {
        return Admission::Refused(Refusal::AtCapacity);
    }
    if !node.take_handshake() {
        return Admission::Refused(Refusal::RateLimited);
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = match node.auth.authenticate(authorization, request.uri().query()) {
        Ok(identity) => identity,
        Err(AuthError::Unauthorized(why)) => {
            tracing::debug!(%why, "upgrade refused: unauthorized");
            return Admission::Refused(Refusal::Unauthorized);
        }
        Err(AuthError::Forbidden(why)) => {
            tracing::debug!(%why, "upgrade refused: forbidden");
            return Admission::Refused(Refusal::Forbidden);
        }
    };
    // The cap was checked above without taking a slot; taking it can still lose a race.
    match node.admit() {
        Some(slot) => Admission::Admitted(slot, identity),
        None => Admission::Refused(Refusal::AtCapacity),
    }
}

fn refusal_response(refusal: Refusal) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{}\n", refusal.reason())));
    *response.status_mut() = refusal.status();
    if let Some(secs) = refusal.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    response
}
