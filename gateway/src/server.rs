//! The WebSocket listener: accepts TCP connections and runs each upgrade through admission —
//! drain state, the connection cap, authentication and the handshake budget — before the
//! connection takes over. Refusals are an HTTP status with `Retry-After`, or (in `close-1013`
//! refusal mode) an accepted upgrade closed at once with 1013 and a reason.

use crate::auth::{AuthError, Identity};
use crate::config::RefusalMode;
use crate::connection;
use crate::frame::Frame;
use crate::metrics::metrics;
use crate::node::{ConnSlot, Node};
use crate::upgrade::{self, Read, Request, Status};
use bytes::Bytes;
use socket2::SockRef;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Seconds a client refused at the cap or while draining is told to wait (it should add
/// jitter; see docs/protocol.md).
const RETRY_AFTER_FULL_SECS: u64 = 5;
/// Seconds a client refused by the handshake budget is told to wait.
const RETRY_AFTER_RATE_SECS: u64 = 1;
/// How long writing a refusal may take before the socket is just dropped.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a refusal, how long and how much of what the client still sends is read and dropped.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
const REFUSAL_LINGER_BYTES: usize = 64 * 1024;
/// The close code of a refusal in `close-1013` mode: "try again later".
const TRY_AGAIN_LATER: u16 = 1013;

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
    fn status(self) -> Status {
        match self {
            Refusal::NotFound => Status::NOT_FOUND,
            Refusal::Draining | Refusal::AtCapacity => Status::SERVICE_UNAVAILABLE,
            Refusal::RateLimited => Status::TOO_MANY_REQUESTS,
            Refusal::Unauthorized => Status::UNAUTHORIZED,
            Refusal::Forbidden => Status::FORBIDDEN,
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

/// Accepts connections until the process ends. Accept errors (e.g. out of file descriptors)
/// are logged and retried after a pause rather than ending the node.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let inherited = nodelay_for_accepted(&listener);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if !inherited {
                    let _ = stream.set_nodelay(true);
                }
                tokio::spawn(handle(Arc::clone(&node), stream));
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Replies and pings must not wait for Nagle. Linux copies TCP_NODELAY from the listener to
/// every accepted socket, which saves a syscall per connection; returns whether it does here.
fn nodelay_for_accepted(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux") && SockRef::from(listener).set_tcp_nodelay(true).is_ok()
}

/// Runs one connection from handshake to close.
async fn handle(node: Arc<Node>, stream: TcpStream) {
    // Boxed so the handshake's state is freed once the upgrade is done, instead of sizing
    // every connection's task for it.
    let Some(upgraded) = Box::pin(handshake(&node, stream)).await else {
        return;
    };
    connection::run(
        upgraded.slot,
        upgraded.stream,
        upgraded.early,
        upgraded.answer,
        upgraded.identity,
    )
    .await;
}

/// An admitted upgrade, ready to become a connection.
struct Upgraded {
    slot: ConnSlot,
    identity: Identity,
    stream: TcpStream,
    /// Bytes the client sent after its request head (WebSocket frames it did not wait with).
    early: Vec<u8>,
    /// The `101 Switching Protocols`, not sent yet: it leaves together with the `welcome`.
    answer: Bytes,
}

/// Reads the upgrade request and decides on it; answers refusals itself.
async fn handshake(node: &Arc<Node>, mut stream: TcpStream) -> Option<Upgraded> {
    let read = tokio::time::timeout(node.config.handshake_timeout, upgrade::read(&mut stream));
    let (request, early) = match read.await {
        Ok(Read::Upgrade(request, early)) => (request, early),
        Ok(Read::Bad(bad)) => {
            metrics().handshake("failed");
            tracing::debug!(%bad, "upgrade refused: bad request");
            let answer = upgrade::refusal(bad.status(), &bad.to_string(), None);
            send_and_close(stream, &[answer]).await;
            return None;
        }
        Ok(Read::Gone) => {
            metrics().handshake("failed");
            return None;
        }
        Err(_) => {
            metrics().handshake("timeout");
            return None;
        }
    };
    match admit(node, &request) {
        Admission::Admitted(slot, identity) => {
            metrics().handshake("accepted");
            Some(Upgraded {
                slot,
                identity,
                stream,
                early,
                answer: upgrade::switching_protocols(&request.key),
            })
        }
        Admission::Refused(refusal) => {
            metrics().handshake(refusal.label());
            let retry_after = refusal.retry_after();
            let answer =
                if refusal.load_shedding() && node.config.refusal_mode == RefusalMode::Close1013 {
                    let reason = format!(
                        "{}; retry after {}s",
                        refusal.reason(),
                        retry_after.unwrap_or(RETRY_AFTER_FULL_SECS)
                    );
                    vec![
                        upgrade::switching_protocols(&request.key),
                        Frame::close(TRY_AGAIN_LATER, &reason).into_bytes(),
                    ]
                } else {
                    vec![upgrade::refusal(
                        refusal.status(),
                        refusal.reason(),
                        retry_after,
                    )]
                };
            send_and_close(stream, &answer).await;
            None
        }
    }
}

/// Writes a refusal and closes the socket, giving up on a client that does not read.
async fn send_and_close(mut stream: TcpStream, answer: &[Bytes]) {
    let send = async {
        for part in answer {
            stream.write_all(part).await?;
        }
        stream.shutdown().await
    };
    if !matches!(
        tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, send).await,
        Ok(Ok(()))
    ) {
        return;
    }
    // Closing a socket with unread bytes from the client makes Linux send a reset, which can
    // destroy the answer before the client reads it (e.g. a 431 while it is still sending
    // its head): read and drop what it still sends, briefly, until it closes.
    let linger = async {
        let mut sink = [0u8; 4096];
        let mut left = REFUSAL_LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
}

/// Decides whether an upgrade request may become a connection.
fn admit(node: &Arc<Node>, request: &Request) -> Admission {
    if request.path != "/ws" {
        return Admission::Refused(Refusal::NotFound);
    }
    if !node.serving() {
        return Admission::Refused(Refusal::Draining);
    }
    if node.connections() >= node.config.max_connections {
        return Admission::Refused(Refusal::AtCapacity);
    }
    // Authentication comes before the handshake budget: a flood of requests without a valid
    // token is refused on its own (cheap) verdict and spends none of the budget that lets
    // real clients back in after a drain or an outage.
    let authorization = request.authorization.as_deref();
    let identity = match node
        .auth
        .authenticate(authorization, request.query.as_deref())
    {
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
    if !node.take_handshake() {
        return Admission::Refused(Refusal::RateLimited);
    }
    // The cap was checked above without taking a slot; taking it can still lose a race.
    match node.admit() {
        Some(slot) => Admission::Admitted(slot, identity),
        None => Admission::Refused(Refusal::AtCapacity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inherited = nodelay_for_accepted(&listener);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        if inherited {
            assert!(accepted.nodelay().unwrap(), "TCP_NODELAY was not inherited");
        }
    }
}
