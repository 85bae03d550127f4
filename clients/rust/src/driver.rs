//! The connection task: one per [`Client`](crate::Client). It owns the WebSocket, the
//! subscriptions and the requests awaiting an ack, and runs the reconnect loop: obey the
//! gateway's `reconnect` hint and close codes, otherwise back off with full jitter, then resume
//! every subscription from its cursor. With a token callback it also refreshes the session's
//! token ahead of its expiry (the timing rules are in [`crate::token`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::ClientConfig;
use crate::error::ErrorCode;
use crate::event::Event;
use crate::protocol::{ClientFrame, ServerFrame};
use crate::session::{Direct, Session};
use crate::state::{Answered, ClientState, Command, RefreshAnswer, SERVICE_RESTART};
use crate::token;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// A token being fetched from the application's callback for a refresh.
type TokenFetch = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// tungstenite zero-fills its whole read buffer before every socket read; its 128 KiB default
/// made that memset ~40 % of a subscriber's CPU. Larger messages still arrive, over several
/// reads.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The session's token: when it expires, and when the next refresh (or retry) is due.
#[derive(Default)]
struct Renewal {
    expires_at_ms: Option<u64>,
    due: Option<Instant>,
    /// Failed refreshes since the last success, for the retry backoff.
    failures: u32,
}

/// A failed connection attempt.
struct Refused {
    reason: String,
    /// The gateway's `Retry-After` on a refused upgrade (503 at its cap or while draining,
    /// 429 beyond its handshake budget): a floor under the next attempt's jittered delay.
    retry_after: Option<Duration>,
}

impl From<String> for Refused {
    fn from(reason: String) -> Self {
        Refused {
            reason,
            retry_after: None,
        }
    }
}

/// A live connection after its `welcome`.
struct Opened {
    ws: Ws,
    session: Session,
    /// The gateway's ping interval, from `welcome.heartbeat_ms`.
    heartbeat: Option<Duration>,
}

/// How a session ended.
enum Ended {
    /// The application closed the client.
    ByClient,
    /// The gateway asked us to move at this instant (reconnect hint).
    Hinted {
        at: Instant,
    },
    Lost {
        code: Option<u16>,
        reason: String,
    },
    /// The gateway could not resume a subscription for now (e.g. its backplane is down).
    ResumeRefused {
        reason: String,
    },
}

pub(crate) struct Driver {
    config: ClientConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    events: broadcast::Sender<Event>,
    session: watch::Sender<Option<Session>>,
    directs: mpsc::UnboundedSender<Direct>,
    directs_taken: Arc<AtomicBool>,
    /// Subscriptions, requests in flight and reconnect attempts: the rules, without the socket.
    state: ClientState,
    next_endpoint: usize,
    renewal: Renewal,
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::UnboundedReceiver<Command>,
        events: broadcast::Sender<Event>,
        session: watch::Sender<Option<Session>>,
        directs: mpsc::UnboundedSender<Direct>,
        directs_taken: Arc<AtomicBool>,
    ) -> Driver {
        Driver {
            config,
            commands,
            events,
            session,
            directs,
            directs_taken,
            state: ClientState::default(),
            next_endpoint: 0,
            renewal: Renewal::default(),
        }
    }

    /// The reconnect loop. Ends when the client is closed or dropped, or after
    /// `max_reconnect_attempts` consecutive failures.
    pub(crate) async fn run(mut self) {
        loop {
            let endpoint =
                self.config.endpoints[self.next_endpoint % self.config.endpoints.len()].clone();
            self.next_endpoint = self.next_endpoint.wrapping_add(1);
            let delay = match self.open(&endpoint).await {
                Ok(opened) => {
                    let failed_before = self.state.session_started();
                    let ended = self.serve(opened).await;
                    self.session.send_replace(None);
                    self.state.fail_in_flight();
                    match ended {
                        Ended::ByClient => return,
                        Ended::Hinted { at } => {
                            self.emit(Event::Disconnected {
                                code: None,
                                reason: "reconnect requested by the gateway".into(),
                            });
                            at.saturating_duration_since(Instant::now())
                        }
                        Ended::Lost { code, reason } => {
                            self.emit(Event::Disconnected { code, reason });
                            self.delay_after_loss(code)
                        }
                        Ended::ResumeRefused { reason } => {
                            self.state.session_not_good(failed_before);
                            self.emit(Event::Disconnected { code: None, reason });
                            self.delay_after_loss(None)
                        }
                    }
                }
                Err(refused) => {
                    self.emit(Event::Disconnected {
                        code: None,
                        reason: refused.reason,
                    });
                    self.delay_after_loss(None) + refused.retry_after.unwrap_or_default()
                }
            };
            if self
                .config
                .max_reconnect_attempts
                .is_some_and(|max| self.state.attempt() >= max)
            {
                self.emit(Event::GaveUp);
                return;
            }
            self.emit(Event::Reconnecting {
                delay,
                attempt: self.state.attempt(),
            });
            if !self.wait_offline(delay).await {
                return;
            }
        }
    }

    /// The delay before the next attempt after a loss that came without a reconnect hint.
    fn delay_after_loss(&mut self, code: Option<u16>) -> Duration {
        self.state
            .delay_after_loss(code, &self.config.backoff, &mut rand::rng())
    }

    /// TCP connect, WebSocket handshake and `welcome`, all within `connect_timeout`.
    async fn open(&mut self, endpoint: &str) -> Result<Opened, Refused> {
        let timeout = self.config.connect_timeout;
        match tokio::time::timeout(timeout, self.handshake(endpoint)).await {
            Ok(result) => result,
            Err(_) => Err(format!("connecting to {endpoint} timed out after {timeout:?}").into()),
        }
    }

    async fn handshake(&self, endpoint: &str) -> Result<Opened, Refused> {
        let mut request = endpoint
            .into_client_request()
            .map_err(|e| format!("bad endpoint {endpoint}: {e}"))?;
        // A fresh token for every attempt, so a reconnect after an outage or a 4001 is not
        // refused for the token it had.
        let token = match &self.config.token_callback {
            Some(source) => Some(source.fetch().await?),
            None => self.config.token.clone(),
        };
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| format!("bad token: {e}"))?;
            request.headers_mut().insert("authorization", value);
        }
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(self.config.max_message_bytes));
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true)
                .await
                .map_err(|e| refusal(endpoint, &e))?;
        // The first frame must be the welcome; pings before it are answered by the library.
        for _ in 0..16 {
            let reason = match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => match ServerFrame::decode(&text) {
                    Ok(ServerFrame::Welcome {
                        client_id,
                        node,
                        heartbeat_ms,
                        expires_at_ms,
                    }) => {
                        let heartbeat =
                            (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
                        let session = Session {
                            client_id,
                            node,
                            expires_at_ms,
                        };
                        return Ok(Opened {
                            ws,
                            session,
                            heartbeat,
                        });
                    }
                    Ok(other) => format!("expected welcome from {endpoint}, got {other:?}"),
                    Err(e) => format!("malformed welcome from {endpoint}: {e}"),
                },
                Some(Ok(WsMessage::Close(frame))) => {
                    let (code, reason) = close_parts(frame.as_ref());
                    format!("{endpoint} closed before welcome: {code:?} {reason}")
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => format!("{endpoint}: {e}"),
                None => format!("{endpoint} closed before welcome"),
            };
            return Err(reason.into());
        }
        Err(format!("{endpoint} sent no welcome").into())
    }

    /// Runs one session: resume subscriptions, then route frames and commands until the
    /// connection ends.
    async fn serve(&mut self, opened: Opened) -> Ended {
        let Opened {
            mut ws,
            session,
            heartbeat,
        } = opened;
        // The session first: a caller woken by `Connected` reads it at once.
        let connected = Event::Connected {
            client_id: session.client_id.clone(),
            node: session.node.clone(),
        };
        let expires_at_ms = session.expires_at_ms;
        self.session.send_replace(Some(session));
        self.emit(connected);
        for frame in self.state.resume_all() {
            if let Err(e) = write(&mut ws, &frame).await {
                return lost(e);
            }
        }
        self.schedule_refresh(expires_at_ms);
        let mut fetching: Option<TokenFetch> = None;
        // The gateway pings every heartbeat interval; hearing nothing for two intervals (plus
        // slack for a loaded machine) means the connection died without saying so.
        let silence_limit = heartbeat.map(|interval| interval * 2 + Duration::from_secs(5));
        let mut last_heard = Instant::now();
        let mut hint: Option<Instant> = None;
        loop {
            let moving = sleep_until_or_never(hint);
            let silent = sleep_until_or_never(silence_limit.map(|limit| last_heard + limit));
            let refresh_due = sleep_until_or_never(self.renewal.due.filter(|_| fetching.is_none()));
            tokio::select! {
                frame = ws.next() => {
                    last_heard = Instant::now();
                    if let Some(ended) = self.on_read(frame, &mut ws, &mut hint).await {
                        return ended;
                    }
                }
                command = self.commands.recv() => {
                    if let Some(ended) = self.on_command(command, &mut ws).await {
                        return ended;
                    }
                }
                () = moving => {
                    // The gateway asked us to move by now; leave without waiting for its close.
                    let close = CloseFrame { code: CloseCode::Away, reason: "moving on gateway request".into() };
                    let _ = ws.close(Some(close)).await;
                    return Ended::Hinted { at: Instant::now() };
                }
                () = silent => {
                    let reason = "no frame from the gateway within two heartbeat intervals";
                    return Ended::Lost { code: None, reason: reason.into() };
                }
                () = refresh_due => {
                    // Fetched beside the loop: a slow callback must not stop reads or pongs.
                    self.renewal.due = None;
                    fetching = self.config.token_callback.as_ref().map(|source| -> TokenFetch {
                        Box::pin(source.fetch())
                    });
                }
                fetched = token_fetched(&mut fetching) => {
                    fetching = None;
                    match fetched {
                        Ok(token) => {
                            let frame = self.state.refresh(token);
                            if let Err(e) = write(&mut ws, &frame).await {
                                return lost(e);
                            }
                        }
                        Err(reason) => self.refresh_failed(reason),
                    }
                }
            }
        }
    }

    /// Re-subscribes every subscription, from its cursor, on a new connection.
    /// Handles what the socket produced; `Some` when the session is over.
    async fn on_read(
        &mut self,
        frame: Option<Result<WsMessage, tungstenite::Error>>,
        ws: &mut Ws,
        hint: &mut Option<Instant>,
    ) -> Option<Ended> {
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                for reply in self.on_frame(&text, hint) {
                    if let Err(e) = write(ws, &reply).await {
                        return Some(lost(e));
                    }
                }
                let reason = self.state.take_resume_refused()?;
                let close = CloseFrame {
                    code: CloseCode::Away,
                    reason: "resuming elsewhere".into(),
                };
                let _ = ws.close(Some(close)).await;
                Some(Ended::ResumeRefused { reason })
            }
            Some(Ok(WsMessage::Close(frame))) => {
                let (code, reason) = close_parts(frame.as_ref());
                Some(match (*hint, code) {
                    (Some(at), Some(SERVICE_RESTART) | None) => Ended::Hinted { at },
                    _ => Ended::Lost { code, reason },
                })
            }
            // Pings are answered by tungstenite; binary frames are not part of the protocol.
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(match *hint {
                Some(at) => Ended::Hinted { at },
                None => lost(e),
            }),
            None => Some(match *hint {
                Some(at) => Ended::Hinted { at },
                None => Ended::Lost {
                    code: None,
                    reason: "connection closed".into(),
                },
            }),
        }
    }

    /// Handles an application command while connected; `Some` when the session is over.
    async fn on_command(&mut self, command: Option<Command>, ws: &mut Ws) -> Option<Ended> {
        let Some(command) = command else {
            let _ = ws.close(None).await;
            return Some(Ended::ByClient);
        };
        match self.state.online(command) {
            Ok(Some(frame)) => write(ws, &frame).await.err().map(lost),
            Ok(None) => None,
            Err(()) => {
                let _ = ws.close(None).await;
                Some(Ended::ByClient)
            }
        }
    }

    /// Handles one gateway frame; returns frames to send back (unsubscribes for dropped
    /// subscriptions).
    fn on_frame(&mut self, text: &str, hint: &mut Option<Instant>) -> Vec<ClientFrame> {
        let frame = match ServerFrame::decode(text) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed frame from the gateway");
                return Vec::new();
            }
        };
        match frame {
            ServerFrame::Message {
                channel,
                offset,
                data,
            } => {
                let replies = self.state.deliver(channel, offset, data);
                self.emit_state_events();
                replies
            }
            ServerFrame::Ack {
                id,
                offset,
                epoch,
                recovered,
                expires_at_ms,
                duplicate,
            } => {
                let answered = Answered {
                    offset,
                    epoch,
                    recovered,
                    expires_at_ms,
                    duplicate,
                };
                let refresh = self.state.on_ack(id, answered);
                self.emit_state_events();
                self.on_refresh(refresh);
                Vec::new()
            }
            ServerFrame::Error { code, message, id } => {
                let refresh = self.state.on_error(id, ErrorCode::parse(&code), message);
                self.emit_state_events();
                self.on_refresh(refresh);
                Vec::new()
            }
            ServerFrame::Direct { from, data } => {
                if self.directs_taken.load(Ordering::Acquire) {
                    let _ = self.directs.send(Direct { from, data });
                }
                Vec::new()
            }
            ServerFrame::Reconnect { after_ms, reason } => {
                tracing::debug!(after_ms, %reason, "gateway asked us to reconnect");
                let after = Duration::from_millis(after_ms);
                *hint = Some(Instant::now() + after);
                self.emit(Event::Draining { after, reason });
                Vec::new()
            }
            ServerFrame::Welcome { .. } => Vec::new(),
        }
    }

    /// What the gateway answered to our `refresh`, if the frame was that answer.
    fn on_refresh(&mut self, answer: Option<RefreshAnswer>) {
        match answer {
            Some(RefreshAnswer::Accepted { expires_at_ms }) => {
                self.schedule_refresh(expires_at_ms);
                self.session.send_modify(|session| {
                    if let Some(session) = session {
                        session.expires_at_ms = expires_at_ms;
                    }
                });
                if let Some(expires_at_ms) = expires_at_ms {
                    self.emit(Event::TokenRefreshed { expires_at_ms });
                }
            }
            Some(RefreshAnswer::Refused(reason)) => self.refresh_failed(reason),
            None => {}
        }
    }

    /// A token that expires at `expires_at_ms` is now the session's: its refresh is scheduled
    /// (with a callback to get the next one; a static token cannot be refreshed).
    fn schedule_refresh(&mut self, expires_at_ms: Option<u64>) {
        self.renewal = Renewal {
            expires_at_ms,
            due: None,
            failures: 0,
        };
        if let (Some(at), Some(_)) = (expires_at_ms, &self.config.token_callback) {
            self.renewal.due = Some(Instant::now() + token::refresh_in(unix_ms(), at));
        }
    }

    /// A refresh failed (callback or gateway): retry with backoff until the token expires;
    /// after that the gateway closes with 4001 and the reconnect fetches a fresh token.
    fn refresh_failed(&mut self, reason: String) {
        let delay = self
            .config
            .backoff
            .delay(self.renewal.failures, &mut rand::rng());
        self.renewal.failures = self.renewal.failures.saturating_add(1);
        let retry_in = self
            .renewal
            .expires_at_ms
            .and_then(|at| token::retry_in(delay, unix_ms(), at));
        self.renewal.due = retry_in.map(|after| Instant::now() + after);
        tracing::debug!(%reason, ?retry_in, "token refresh failed");
        self.emit(Event::TokenRefreshFailed { reason, retry_in });
    }

    /// Waits `delay` between connections, still answering commands: subscriptions are kept
    /// for the next session, publishes and sends fail at once. Returns false when closed.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                command = self.commands.recv() => {
                    let open = command.is_some_and(|command| self.state.offline(command));
                    if !open {
                        return false;
                    }
                }
            }
        }
    }

    fn emit(&self, event: Event) {
        // No receivers is fine: events are optional for the application.
        let _ = self.events.send(event);
    }

    /// Passes on what the state's rules had to say.
    fn emit_state_events(&mut self) {
        for event in self.state.take_events() {
            self.emit(event);
        }
    }
}

async fn write(ws: &mut Ws, frame: &ClientFrame) -> Result<(), tungstenite::Error> {
    ws.send(WsMessage::text(frame.encode())).await
}

fn lost(error: tungstenite::Error) -> Ended {
    Ended::Lost {
        code: None,
        reason: error.to_string(),
    }
}

fn close_parts(frame: Option<&CloseFrame>) -> (Option<u16>, String) {
    match frame {
        Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
        None => (None, "closed without a close frame".into()),
    }
}

async fn token_fetched(fetch: &mut Option<TokenFetch>) -> Result<String, String> {
    match fetch {
        Some(fetch) => fetch.await,
        None => std::future::pending().await,
    }
}

/// Now, in the unit of the gateway's `expires_at_ms`.
fn unix_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Longest `Retry-After` obeyed, so a bad header cannot park a client for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Describes a failed handshake, keeping the gateway's `Retry-After` when it sent one.
fn refusal(endpoint: &str, error: &tungstenite::Error) -> Refused {
    let tungstenite::Error::Http(response) = error else {
        return format!("{endpoint}: {error}").into();
    };
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    let shown = retry_after
        .map(|d| format!(" (Retry-After: {}s)", d.as_secs()))
        .unwrap_or_default();
    Refused {
        reason: format!(
            "{endpoint} refused the upgrade with HTTP {}{shown}",
            response.status()
        ),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TRY_AGAIN_LATER;

    #[test]
    fn refused_upgrades_keep_retry_after() {
        let response = |retry_after: &str| {
            let response = tungstenite::http::Response::builder()
                .status(503)
                .header("retry-after", retry_after)
                .body(None)
                .unwrap();
            refusal("ws://n1/ws", &tungstenite::Error::Http(Box::new(response)))
        };
        let refused = response("3");
        assert_eq!(refused.retry_after, Some(Duration::from_secs(3)));
        assert!(refused.reason.contains("503"), "{}", refused.reason);
        assert_eq!(response("999999").retry_after, Some(MAX_RETRY_AFTER));
        assert_eq!(response("soon").retry_after, None);
        let io = tungstenite::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(refusal("ws://n1/ws", &io).retry_after, None);
    }

    #[test]
    fn close_codes_are_read_from_frames() {
        let frame = CloseFrame {
            code: CloseCode::Restart,
            reason: "drain".into(),
        };
        assert_eq!(
            close_parts(Some(&frame)),
            (Some(SERVICE_RESTART), "drain".into())
        );
        let frame = CloseFrame {
            code: CloseCode::Again,
            reason: "".into(),
        };
        assert_eq!(close_parts(Some(&frame)).0, Some(TRY_AGAIN_LATER));
        assert_eq!(close_parts(None).0, None);
    }
}
