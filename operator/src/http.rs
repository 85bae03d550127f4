//! The operator's HTTP endpoints: `/healthz` (its loops are making progress, see [`Health`])
//! and `/metrics` (Prometheus).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::health::Health;
use crate::metrics::Metrics;

#[derive(Clone)]
struct Shared {
    metrics: Metrics,
    health: Health,
}

/// The router serving health and metrics.
pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(Shared { metrics, health })
}

async fn healthz(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.health.check() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(stuck) => {
            tracing::warn!(%stuck, "liveness check failing");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("stalled: {stuck}\n"),
            )
        }
    }
}

async fn render_metrics(State(Shared { metrics, .. }): State<Shared>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// Serves `router` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Health,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn serves_health_and_metrics() {
        let metrics = Metrics::new().expect("metrics");
        drop(metrics.reconcile_started());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let health = Health::new(std::time::Duration::from_millis(50));
        let server = tokio::spawn(serve(listener, metrics, health.clone()));
        let ok = get(addr, "/healthz").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let _stuck = health.reconcile_started();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let stalled = get(addr, "/healthz").await;
        assert!(stalled.starts_with("HTTP/1.1 503"), "{stalled}");
        assert!(
            stalled.contains("a reconcile has been running"),
            "{stalled}"
        );
        let text = get(addr, "/metrics").await;
        assert!(
            text.contains("wsfleet_operator_reconciles_total 1"),
            "{text}"
        );
        server.abort();
    }
}
