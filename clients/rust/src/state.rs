//! The client's state apart from any socket: its subscriptions (with their cursors), the
//! requests awaiting an answer, and how long to wait before the next connection attempt. The
//! connection task ([`crate::driver`]) feeds it what arrives and sends what it returns; the
//! rules themselves (what a frame or a command leads to) are here, where tables test them.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Backoff;
use crate::cursor::{AckOutcome, Cursor};
use crate::error::{Error, ErrorCode};
use crate::event::Event;
use crate::protocol::ClientFrame;
use crate::session::{Ack, Message};
use wsfleet_api::codes::CLOSE_TOKEN_EXPIRED;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Close codes with a meaning for reconnecting: 1012 "service restart" (a drain) and
/// 1013 "try again later" (the node is full or overloaded).
pub(crate) const SERVICE_RESTART: u16 = 1012;
pub(crate) const TRY_AGAIN_LATER: u16 = 1013;

/// What the application asked for.
pub(crate) enum Command {
    Subscribe {
        channel: String,
        messages: mpsc::UnboundedSender<Message>,
        reply: Reply<Ack>,
    },
    Unsubscribe {
        channel: String,
        reply: Reply<Ack>,
    },
    Publish {
        channel: String,
        data: Value,
        idempotency_key: Option<String>,
        reply: Reply<Ack>,
    },
    Send {
        to: String,
        data: Value,
        reply: Reply<Ack>,
    },
    Close,
}

/// A subscription as the client keeps it.
struct Subscribed {
    cursor: Cursor,
    messages: mpsc::UnboundedSender<Message>,
    /// The application's `subscribe` call, answered by the first ack.
    waiting: Option<Reply<Ack>>,
    /// The last offset received on the current connection, whether delivered or not.
    wire_last: Option<u64>,
}

/// A request sent on the current connection and not yet answered.
enum InFlight {
    Subscribe {
        channel: String,
    },
    /// Our own `refresh`; its ack carries the new expiry.
    Refresh,
    Done(Reply<Ack>),
}

/// What an `ack` carried besides its request id.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
    pub recovered: Option<bool>,
    pub expires_at_ms: Option<u64>,
    pub duplicate: Option<bool>,
}

/// What an answer to one of the client's own `refresh` requests said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RefreshAnswer {
    /// The gateway took the token; the session now expires then (if it says).
    Accepted { expires_at_ms: Option<u64> },
    /// The gateway refused it, for this reason.
    Refused(String),
}

/// Subscriptions, requests in flight and reconnect attempts. Events for the application
/// collect in [`ClientState::take_events`].
#[derive(Default)]
pub(crate) struct ClientState {
    subscriptions: HashMap<String, Subscribed>,
    in_flight: HashMap<String, InFlight>,
    next_request: u64,
    /// Consecutive attempts without a session.
    attempt: u32,
    /// Set when the gateway refused to resume a subscription for now; the session then ends.
    resume_refused: Option<String>,
    events: Vec<Event>,
}

impl ClientState {
    /// Events since the last call, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Consecutive attempts without a session.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A session started: the attempt count starts over. Returns the count it had, for
    /// [`ClientState::session_not_good`].
    pub fn session_started(&mut self) -> u32 {
        std::mem::take(&mut self.attempt)
    }

    /// The session that just ended did not count as good (a resume it could not serve): the
    /// backoff continues from `attempt`, or nodes that cannot serve would be retried at the
    /// base delay forever.
    pub fn session_not_good(&mut self, attempt: u32) {
        self.attempt = attempt;
    }

    /// The delay before the next attempt after a loss without a reconnect hint, by the close
    /// code the gateway sent (if any); counts the attempt.
    pub fn delay_after_loss(
        &mut self,
        code: Option<u16>,
        backoff: &Backoff,
        rng: &mut impl Rng,
    ) -> Duration {
        let delay = match code {
            // A drain that did not send a hint (or whose hint we missed), or a token that
            // expired without a refresh (the callback gives a fresh one): move promptly, but
            // spread over the first backoff step.
            Some(SERVICE_RESTART | CLOSE_TOKEN_EXPIRED) => backoff.delay(0, rng),
            // The node is full or overloaded: never retry at once, even after a good session.
            Some(TRY_AGAIN_LATER) => backoff.delay(self.attempt.max(1), rng),
            _ => backoff.delay(self.attempt, rng),
        };
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Why the session must end now to resume elsewhere, once.
    pub fn take_resume_refused(&mut self) -> Option<String> {
        self.resume_refused.take()
    }

    /// The `subscribe` frames that resume every subscription from its cursor on a new
    /// session.
    pub fn resume_all(&mut self) -> Vec<ClientFrame> {
        let channels: Vec<String> = self.subscriptions.keys().cloned().collect();
        channels
            .into_iter()
            .map(|channel| self.resubscribe(channel))
            .collect()
    }

    /// A `subscribe` from the subscription's cursor, registered as in flight.
    fn resubscribe(&mut self, channel: String) -> ClientFrame {
        let since = self.subscriptions.get_mut(&channel).and_then(|s| {
            s.wire_last = None;
            s.cursor.since()
        });
        let id = self.request_id();
        self.in_flight.insert(
            id.clone(),
            InFlight::Subscribe {
                channel: channel.clone(),
            },
        );
        ClientFrame::Subscribe {
            channel,
            since,
            id: Some(id),
        }
    }

    fn subscribing(&self, channel: &str) -> bool {
        self.in_flight
            .values()
            .any(|f| matches!(f, InFlight::Subscribe { channel: c } if c == channel))
    }

    /// A `refresh` frame carrying `token`, registered as in flight.
    pub fn refresh(&mut self, token: String) -> ClientFrame {
        let id = self.request_id();
        self.in_flight.insert(id.clone(), InFlight::Refresh);
        ClientFrame::Refresh {
            token,
            id: Some(id),
        }
    }

    /// A channel message: delivered once and in order to the subscription; returns frames to
    /// send back (a resubscribe after the channel's offsets went backwards, an unsubscribe
    /// when the application dropped the subscription).
    pub fn deliver(&mut self, channel: String, offset: u64, data: Value) -> Vec<ClientFrame> {
        let Some(sub) = self.subscriptions.get_mut(&channel) else {
            return Vec::new();
        };
        // Within a connection the gateway sends a channel's offsets in increasing order
        // (replays included). A lower one means the channel's history was lost and a new epoch
        // restarted its offsets (docs/protocol.md, "Known limit"): resubscribing with `since`
        // learns the new position from the ack, which reports the failed recovery.
        let backwards = sub.wire_last.is_some_and(|last| offset < last);
        sub.wire_last = Some(offset);
        let missed = sub.cursor.missed_before(offset);
        let fresh = sub.cursor.accept(offset);
        let mut replies = Vec::new();
        if backwards && !self.subscribing(&channel) {
            replies.push(self.resubscribe(channel.clone()));
        }
        if !fresh {
            return replies;
        }
        let Some(sub) = self.subscriptions.get_mut(&channel) else {
            return Vec::new();
        };
        let message = Message {
            channel: channel.clone(),
            offset,
            data,
        };
        if sub.messages.send(message).is_err() {
            // The application dropped its Subscription: stop receiving the channel.
            self.subscriptions.remove(&channel);
            return vec![ClientFrame::Unsubscribe { channel, id: None }];
        }
        if missed > 0 {
            self.events.push(Event::Gap { channel, missed });
        }
        replies
    }

    /// An `ack`; what it said about our own `refresh`, when it answered one.
    pub fn on_ack(&mut self, id: Option<String>, answer: Answered) -> Option<RefreshAnswer> {
        let Answered {
            offset,
            epoch,
            recovered,
            expires_at_ms,
            duplicate,
        } = answer;
        match id.and_then(|id| self.in_flight.remove(&id))? {
            InFlight::Subscribe { channel } => {
                let sub = self.subscriptions.get_mut(&channel)?;
                let outcome = sub.cursor.on_ack(offset, epoch.clone(), recovered);
                if let Some(reply) = sub.waiting.take() {
                    let _ = reply.send(Ok(Ack {
                        offset,
                        epoch,
                        duplicate: false,
                    }));
                }
                if outcome == AckOutcome::RecoveryFailed {
                    self.events.push(Event::RecoveryFailed { channel });
                }
                None
            }
            InFlight::Refresh => Some(RefreshAnswer::Accepted { expires_at_ms }),
            InFlight::Done(reply) => {
                let _ = reply.send(Ok(Ack {
                    offset,
                    epoch,
                    duplicate: duplicate.unwrap_or(false),
                }));
                None
            }
        }
    }

    /// An `error`; what it said about our own `refresh`, when it answered one.
    pub fn on_error(
        &mut self,
        id: Option<String>,
        code: ErrorCode,
        message: String,
    ) -> Option<RefreshAnswer> {
        let Some(request) = id.and_then(|id| self.in_flight.remove(&id)) else {
            self.events.push(Event::ServerError { code, message });
            return None;
        };
        match request {
            InFlight::Subscribe { channel } => {
                let sub = self.subscriptions.get_mut(&channel)?;
                if let Some(reply) = sub.waiting.take() {
                    // A first subscribe: the application hears of it and decides.
                    self.subscriptions.remove(&channel);
                    let _ = reply.send(Err(Error::Server { code, message }));
                } else if code.is_transient() {
                    // A resume this node cannot serve now: keep the subscription, reconnect
                    // with backoff (to the next endpoint) and resume from the same offset.
                    self.resume_refused = Some(format!(
                        "the gateway could not resume {channel}: {code}: {message}"
                    ));
                } else {
                    self.subscriptions.remove(&channel);
                    self.events.push(Event::SubscriptionLost {
                        channel,
                        code,
                        message,
                    });
                }
                None
            }
            InFlight::Refresh => Some(RefreshAnswer::Refused(format!(
                "the gateway refused the refresh ({code}): {message}"
            ))),
            InFlight::Done(reply) => {
                let _ = reply.send(Err(Error::Server { code, message }));
                None
            }
        }
    }

    /// Turns a command into a frame for the live connection; `Err` means close.
    pub fn online(&mut self, command: Command) -> Result<Option<ClientFrame>, ()> {
        let id = self.request_id();
        let frame = match command {
            Command::Close => return Err(()),
            Command::Subscribe {
                channel,
                messages,
                reply,
            } => {
                if !self.register(&channel, messages, reply) {
                    return Ok(None);
                }
                self.in_flight.insert(
                    id.clone(),
                    InFlight::Subscribe {
                        channel: channel.clone(),
                    },
                );
                ClientFrame::Subscribe {
                    channel,
                    since: None,
                    id: Some(id),
                }
            }
            Command::Unsubscribe { channel, reply } => {
                self.subscriptions.remove(&channel);
                self.in_flight.insert(id.clone(), InFlight::Done(reply));
                ClientFrame::Unsubscribe {
                    channel,
                    id: Some(id),
                }
            }
            Command::Publish {
                channel,
                data,
                idempotency_key,
                reply,
            } => {
                self.in_flight.insert(id.clone(), InFlight::Done(reply));
                ClientFrame::Publish {
                    channel,
                    data,
                    idempotency_key,
                    id: Some(id),
                }
            }
            Command::Send { to, data, reply } => {
                self.in_flight.insert(id.clone(), InFlight::Done(reply));
                ClientFrame::Send {
                    to,
                    data,
                    id: Some(id),
                }
            }
        };
        Ok(Some(frame))
    }

    /// A command between connections: subscriptions are kept for the next session, publishes
    /// and sends fail at once. False when the client is closing.
    pub fn offline(&mut self, command: Command) -> bool {
        match command {
            Command::Close => return false,
            Command::Subscribe {
                channel,
                messages,
                reply,
            } => {
                self.register(&channel, messages, reply);
            }
            Command::Unsubscribe { channel, reply } => {
                self.subscriptions.remove(&channel);
                let _ = reply.send(Ok(Ack::default()));
            }
            Command::Publish { reply, .. } | Command::Send { reply, .. } => {
                let _ = reply.send(Err(Error::NotConnected));
            }
        }
        true
    }

    /// Records a new subscription; false (and the caller told) when the channel is taken.
    fn register(
        &mut self,
        channel: &str,
        messages: mpsc::UnboundedSender<Message>,
        reply: Reply<Ack>,
    ) -> bool {
        if let Some(existing) = self.subscriptions.get(channel)
            && !existing.messages.is_closed()
        {
            let _ = reply.send(Err(Error::AlreadySubscribed(channel.to_owned())));
            return false;
        }
        let sub = Subscribed {
            cursor: Cursor::default(),
            messages,
            waiting: Some(reply),
            wire_last: None,
        };
        self.subscriptions.insert(channel.to_owned(), sub);
        true
    }

    /// Requests sent on a lost connection get no answer: fail them so callers do not wait
    /// for a timeout. Subscriptions stay; they are resumed on the next session.
    pub fn fail_in_flight(&mut self) {
        for (_, request) in self.in_flight.drain() {
            if let InFlight::Done(reply) = request {
                let _ = reply.send(Err(Error::Disconnected));
            }
        }
    }

    fn request_id(&mut self) -> String {
        self.next_request = self.next_request.wrapping_add(1);
        format!("r{}", self.next_request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Since;
    use serde_json::json;
    use tokio::sync::mpsc::UnboundedReceiver;
    use tokio::sync::oneshot::Receiver;

    type Answer = Receiver<Result<Ack, Error>>;

    /// A subscribe command: its messages and the application's pending answer.
    fn subscribe(channel: &str) -> (Command, UnboundedReceiver<Message>, Answer) {
        let (messages, received) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe {
            channel: channel.into(),
            messages,
            reply,
        };
        (command, received, answer)
    }

    fn publish(channel: &str) -> (Command, Answer) {
        let (reply, answer) = oneshot::channel();
        let command = Command::Publish {
            channel: channel.into(),
            data: json!(1),
            idempotency_key: None,
            reply,
        };
        (command, answer)
    }

    fn answered(offset: Option<u64>, epoch: Option<&str>, expires_at_ms: Option<u64>) -> Answered {
        Answered {
            offset,
            epoch: epoch.map(str::to_owned),
            expires_at_ms,
            ..Answered::default()
        }
    }

    /// The request id a frame carries.
    fn id_of(frame: &ClientFrame) -> String {
        match frame {
            ClientFrame::Subscribe { id, .. }
            | ClientFrame::Unsubscribe { id, .. }
            | ClientFrame::Publish { id, .. }
            | ClientFrame::Send { id, .. }
            | ClientFrame::Refresh { id, .. } => id.clone().expect("an id"),
        }
    }

    /// A state subscribed to `c` and acked at offset 5 of epoch `e`.
    fn subscribed() -> (ClientState, UnboundedReceiver<Message>) {
        let mut state = ClientState::default();
        let (command, received, mut answer) = subscribe("c");
        let frame = state.online(command).expect("open").expect("a frame");
        state.on_ack(Some(id_of(&frame)), answered(Some(5), Some("e"), None));
        assert_eq!(
            answer.try_recv().expect("answered").expect("acked"),
            Ack {
                offset: Some(5),
                epoch: Some("e".into()),
                duplicate: false,
            }
        );
        (state, received)
    }

    fn offsets(received: &mut UnboundedReceiver<Message>) -> Vec<u64> {
        std::iter::from_fn(|| received.try_recv().ok())
            .map(|m| m.offset)
            .collect()
    }

    #[test]
    fn channel_messages_are_delivered_once_in_order_and_gaps_are_told() {
        let (mut state, mut received) = subscribed();
        // (offset that arrives, frames sent back, offsets the application gets, events)
        let steps: [(u64, usize, &[u64], &[Event]); 5] = [
            (6, 0, &[6], &[]),
            (6, 0, &[], &[]),
            (
                9,
                0,
                &[9],
                &[Event::Gap {
                    channel: "c".into(),
                    missed: 2,
                }],
            ),
            // Lower than the last on this connection: history was lost; resubscribe from 9.
            (8, 1, &[], &[]),
            (10, 0, &[10], &[]),
        ];
        for (offset, replies, delivered, events) in steps {
            let frames = state.deliver("c".into(), offset, json!(offset));
            assert_eq!(frames.len(), replies, "offset {offset}: {frames:?}");
            assert_eq!(offsets(&mut received), delivered, "offset {offset}");
            assert_eq!(state.take_events(), events, "offset {offset}");
        }
        assert!(
            state.deliver("other".into(), 1, json!(1)).is_empty(),
            "not subscribed"
        );
    }

    #[test]
    fn offsets_going_backwards_resubscribe_from_the_cursor_once() {
        let (mut state, _received) = subscribed();
        state.deliver("c".into(), 7, json!(7));
        let frames = state.deliver("c".into(), 2, json!(2));
        let since = Since {
            offset: 7,
            epoch: "e".into(),
        };
        assert!(
            matches!(&frames[..], [ClientFrame::Subscribe { channel, since: Some(s), .. }]
                if channel == "c" && *s == since),
            "{frames:?}"
        );
        assert!(
            state.deliver("c".into(), 1, json!(1)).is_empty(),
            "one resubscribe in flight is enough"
        );
    }

    #[test]
    fn a_dropped_subscription_is_unsubscribed() {
        let (mut state, received) = subscribed();
        drop(received);
        let frames = state.deliver("c".into(), 6, json!(6));
        assert_eq!(
            frames,
            [ClientFrame::Unsubscribe {
                channel: "c".into(),
                id: None
            }]
        );
        assert!(state.resume_all().is_empty(), "and not resumed");
    }

    #[test]
    fn answers_reach_the_request_they_answer() {
        let transient = || ErrorCode::Internal;
        let forbidden = || ErrorCode::Forbidden;
        // A publish: acked, or refused.
        let mut state = ClientState::default();
        let (command, mut answer) = publish("c");
        let frame = state.online(command).expect("open").expect("frame");
        state.on_ack(Some(id_of(&frame)), answered(Some(3), Some("e"), None));
        assert_eq!(
            answer.try_recv().expect("answered").map(|a| a.offset),
            Ok(Some(3))
        );
        // A keyed publish answered as a duplicate: the caller learns nothing new was delivered.
        let (command, mut answer) = publish("c");
        let frame = state.online(command).expect("open").expect("frame");
        let duplicate = Answered {
            duplicate: Some(true),
            ..answered(Some(3), Some("e"), None)
        };
        state.on_ack(Some(id_of(&frame)), duplicate);
        assert!(
            answer
                .try_recv()
                .expect("answered")
                .expect("acked")
                .duplicate
        );
        let (command, mut answer) = publish("c");
        let frame = state.online(command).expect("open").expect("frame");
        state.on_error(Some(id_of(&frame)), forbidden(), "no".into());
        assert!(matches!(
            answer.try_recv().expect("answered"),
            Err(Error::Server {
                code: ErrorCode::Forbidden,
                ..
            })
        ));

        // A first subscribe refused: the caller hears it and the channel is free again.
        let (command, _received, mut answer) = subscribe("c");
        let frame = state.online(command).expect("open").expect("frame");
        state.on_error(Some(id_of(&frame)), forbidden(), "no".into());
        assert!(answer.try_recv().expect("answered").is_err());
        assert!(state.resume_all().is_empty());

        // A resume refused for now keeps the subscription and ends the session once.
        let (mut state, _received) = subscribed();
        let resume = state.resume_all();
        state.on_error(
            Some(id_of(&resume[0])),
            transient(),
            "backplane down".into(),
        );
        let reason = state.take_resume_refused().expect("the session ends");
        assert!(reason.contains("could not resume c"), "{reason}");
        assert_eq!(state.take_resume_refused(), None);
        assert_eq!(state.resume_all().len(), 1, "kept for the next session");
        assert!(state.take_events().is_empty());

        // A resume refused for good ends the subscription, told as an event.
        let (mut state, _received) = subscribed();
        let resume = state.resume_all();
        state.on_error(Some(id_of(&resume[0])), forbidden(), "revoked".into());
        assert_eq!(state.take_resume_refused(), None);
        assert_eq!(
            state.take_events(),
            [Event::SubscriptionLost {
                channel: "c".into(),
                code: ErrorCode::Forbidden,
                message: "revoked".into()
            }]
        );
        assert!(state.resume_all().is_empty());

        // Our own refresh: accepted with the new expiry, or refused with the reason.
        let frame = state.refresh("t".into());
        assert_eq!(
            state.on_ack(Some(id_of(&frame)), answered(None, None, Some(99))),
            Some(RefreshAnswer::Accepted {
                expires_at_ms: Some(99)
            })
        );
        let frame = state.refresh("t".into());
        assert!(matches!(
            state.on_error(Some(id_of(&frame)), ErrorCode::Unauthorized, "expired".into()),
            Some(RefreshAnswer::Refused(reason)) if reason.contains("unauthorized")
        ));

        // An error that answers nothing of ours is an event; an ack of nothing is ignored.
        assert_eq!(state.on_error(None, transient(), "oops".into()), None);
        assert_eq!(
            state.take_events(),
            [Event::ServerError {
                code: ErrorCode::Internal,
                message: "oops".into()
            }]
        );
        assert_eq!(state.on_ack(Some("r999".into()), Answered::default()), None);
    }

    #[test]
    fn a_lost_connection_fails_requests_and_keeps_subscriptions() {
        let (mut state, _received) = subscribed();
        let (command, mut answer) = publish("c");
        state.online(command).expect("open");
        state.fail_in_flight();
        assert_eq!(
            answer.try_recv().expect("answered"),
            Err(Error::Disconnected)
        );
        let resumed = state.resume_all();
        assert!(
            matches!(&resumed[..], [ClientFrame::Subscribe { since: Some(s), .. }] if s.offset == 5),
            "{resumed:?}"
        );
    }

    #[test]
    fn between_connections_subscriptions_wait_and_the_rest_fails() {
        let mut state = ClientState::default();
        let (command, mut answer) = publish("c");
        assert!(state.offline(command));
        assert_eq!(
            answer.try_recv().expect("answered"),
            Err(Error::NotConnected)
        );
        let (command, _first, _pending) = subscribe("c");
        assert!(state.offline(command));
        let (command, _second, mut again) = subscribe("c");
        assert!(state.offline(command));
        assert_eq!(
            again.try_recv().expect("answered"),
            Err(Error::AlreadySubscribed("c".into()))
        );
        assert_eq!(
            state.resume_all().len(),
            1,
            "subscribed on the next session"
        );
        let (reply, mut answer) = oneshot::channel();
        assert!(state.offline(Command::Unsubscribe {
            channel: "c".into(),
            reply
        }));
        assert_eq!(answer.try_recv().expect("answered"), Ok(Ack::default()));
        assert!(!state.offline(Command::Close));
        assert_eq!(state.online(Command::Close), Err(()));
    }

    /// The largest of many delays drawn after a loss with `code` at `attempt` (full jitter
    /// draws from zero up to the ceiling, so the largest of 400 is the ceiling within 1 %).
    fn ceiling_after(code: Option<u16>, attempt: u32) -> (Duration, u32) {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        };
        let mut rng = rand::rng();
        let mut largest = Duration::ZERO;
        let mut next = 0;
        for _ in 0..400 {
            let mut state = ClientState {
                attempt,
                ..ClientState::default()
            };
            largest = largest.max(state.delay_after_loss(code, &backoff, &mut rng));
            next = state.attempt();
        }
        (largest, next)
    }

    #[test]
    fn reconnect_delays_follow_the_close_code() {
        let ms = Duration::from_millis;
        // (close code, attempts before, ceiling of the delay)
        let cases = [
            (None, 0, ms(100)),
            (None, 3, ms(800)),
            (Some(1006), 2, ms(400)),
            // A drain without a hint, an expired token: promptly, whatever came before.
            (Some(SERVICE_RESTART), 5, ms(100)),
            (Some(CLOSE_TOKEN_EXPIRED), 5, ms(100)),
            // A full node: never at once, even right after a good session.
            (Some(TRY_AGAIN_LATER), 0, ms(200)),
            (Some(TRY_AGAIN_LATER), 3, ms(800)),
            (None, 20, Duration::from_secs(10)),
        ];
        for (code, attempt, ceiling) in cases {
            let (largest, next) = ceiling_after(code, attempt);
            assert!(
                largest <= ceiling && largest >= ceiling.mul_f64(0.9),
                "{code:?} after {attempt}: largest {largest:?}, ceiling {ceiling:?}"
            );
            assert_eq!(next, attempt + 1, "{code:?}: the attempt is counted");
        }
        let mut state = ClientState {
            attempt: 4,
            ..ClientState::default()
        };
        assert_eq!(state.session_started(), 4);
        assert_eq!(state.attempt(), 0);
        state.session_not_good(4);
        assert_eq!(
            state.attempt(),
            4,
            "a session that could not resume does not reset"
        );
    }
}
