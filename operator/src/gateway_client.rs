//! The operator's side of the gateway admin API (port 9090): `GET /status` to learn a node's
//! state and connections, `POST /drain` / `DELETE /drain` to start or cancel its drain. Every
//! call carries the fleet's admin token, has a short timeout, and turns any bad reply into a
//! typed error: a node's answer is input from the network and never trusted.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wsfleet_api::{DrainRequest, StatusReport};

/// Whole-call timeout (connect, request, reply). A node that cannot answer `/status` in this
/// time is reported unreachable rather than stalling the reconcile.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest reply body read; `/status` is a few hundred bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GatewayError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0} answered HTTP {1}")]
    Status(SocketAddr, u16),
    #[error("{0} sent a reply that is not the admin contract: {1}")]
    BadReply(SocketAddr, String),
}

/// Talks to gateway admin ports with one fleet's token.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    token: Option<String>,
    timeout: Duration,
}

impl GatewayClient {
    /// A client sending `token` (when known) as a bearer token.
    pub fn new(token: Option<String>) -> GatewayClient {
        GatewayClient {
            token,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> GatewayClient {
        self.timeout = timeout;
        self
    }

    /// `GET /status` of the node at `addr`.
    pub async fn status(&self, addr: SocketAddr) -> Result<StatusReport, GatewayError> {
        let body = self.call(addr, Method::GET, "/status", None).await?;
        serde_json::from_slice(&body).map_err(|e| GatewayError::BadReply(addr, e.to_string()))
    }

    /// `POST /drain`: the node tells its clients to reconnect elsewhere, spread over the
    /// window, and exits at the deadline at the latest. Idempotent on the gateway side.
    pub async fn drain(
        &self,
        addr: SocketAddr,
        request: &DrainRequest,
    ) -> Result<(), GatewayError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| GatewayError::BadReply(addr, format!("encoding the drain: {e}")))?;
        self.call(addr, Method::POST, "/drain", Some(body)).await?;
        Ok(())
    }

    /// `DELETE /drain`: the node serves again.
    pub async fn cancel_drain(&self, addr: SocketAddr) -> Result<(), GatewayError> {
        self.call(addr, Method::DELETE, "/drain", None).await?;
        Ok(())
    }

    async fn call(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, GatewayError> {
        match tokio::time::timeout(self.timeout, self.exchange(addr, method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::Timeout(addr, self.timeout)),
        }
    }

    /// One request on a fresh HTTP/1.1 connection: nodes come and go, so nothing is pooled.
    async fn exchange(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, GatewayError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| GatewayError::Connect(addr, e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| GatewayError::Connect(addr, e.to_string()))?;
        // The connection task ends with the exchange (or with the timeout dropping it).
        let driver = tokio::spawn(connection);

        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string());
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| GatewayError::BadReply(addr, format!("building the request: {e}")))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| GatewayError::Connect(addr, e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| GatewayError::BadReply(addr, format!("reading the body: {e}")))?
                .to_bytes();
            if !status.is_success() {
                return Err(GatewayError::Status(addr, status.as_u16()));
            }
            Ok(body)
        }
        .await;
        driver.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use wsfleet_api::NodeState;

    /// A one-shot HTTP server that answers every connection with `reply` and hands back the
    /// requests it saw.
    async fn server(reply: &'static str) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
            seen
        });
        (addr, task)
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn reads_a_draining_status_with_the_token() {
        let reply = ok(
            r#"{"node":"n1","version":"0.1.0","state":"draining","ready":false,"connections":7,"max_connections":100,"backplane":"up","drain":{"reason":"scale-down","window_seconds":30,"deadline_unix_ms":1700000000000,"remaining":7}}"#,
        );
        let (addr, seen) = server(Box::leak(reply.into_boxed_str())).await;
        let report = GatewayClient::new(Some("s3cret".into()))
            .status(addr)
            .await
            .expect("status");
        assert_eq!(report.state, NodeState::Draining);
        assert_eq!(report.connections, 7);
        assert_eq!(report.drain.map(|d| d.remaining), Some(7));
        let requests = seen.await.expect("server");
        assert!(requests[0].starts_with("GET /status HTTP/1.1"));
        assert!(requests[0].contains("authorization: Bearer s3cret"));
    }

    #[tokio::test]
    async fn sends_the_drain_body() {
        let (addr, seen) = server("HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n").await;
        let request = DrainRequest {
            window_seconds: 45,
            deadline_seconds: 120,
            reason: Some("scale-down".into()),
            count: None,
        };
        GatewayClient::new(Some("t".into()))
            .drain(addr, &request)
            .await
            .expect("drain accepted");
        let requests = seen.await.expect("server");
        assert!(requests[0].starts_with("POST /drain HTTP/1.1"));
        assert!(
            requests[0]
                .contains(r#"{"window_seconds":45,"deadline_seconds":120,"reason":"scale-down"}"#)
        );
    }

    #[tokio::test]
    async fn bad_replies_are_typed_errors() {
        type Expect = fn(&GatewayError) -> bool;
        let cases: [(&'static str, Expect); 4] = [
            (
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
                |e| matches!(e, GatewayError::Status(_, 401)),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nnot json",
                |e| matches!(e, GatewayError::BadReply(..)),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 18\r\n\r\n{\"state\":\"asleep\"}",
                |e| matches!(e, GatewayError::BadReply(..)),
            ),
            ("garbage\r\n\r\n", |e| {
                matches!(e, GatewayError::Connect(..))
            }),
        ];
        for (reply, want) in cases {
            let (addr, _seen) = server(reply).await;
            let err = GatewayClient::new(None)
                .status(addr)
                .await
                .expect_err("must fail");
            assert!(want(&err), "{reply:?} gave {err:?}");
        }
    }

    #[tokio::test]
    async fn a_silent_node_times_out_and_a_closed_port_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = GatewayClient::new(None).with_timeout(Duration::from_millis(200));
        assert!(matches!(
            client.status(addr).await,
            Err(GatewayError::Timeout(..))
        ));
        drop(listener);
        assert!(matches!(
            client.status(addr).await,
            Err(GatewayError::Connect(..))
        ));
    }
}
