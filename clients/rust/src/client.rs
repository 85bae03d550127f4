//! The application's handle: `connect`, and the operations (subscribe, unsubscribe,
//! publish, send) that it hands to the connection task as commands.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot, watch};

use crate::config::ClientConfig;
use crate::driver::Driver;
use crate::error::Error;
use crate::event::Event;
use crate::protocol::valid_channel;
use crate::session::{Ack, Direct, Message, Session};
use crate::state::Command;

/// Events kept for slow receivers. `broadcast` allocates every slot up front, and a load
/// tool holds thousands of clients: 1024 slots cost ~100 KiB per client, 64 cost ~6 KiB.
const EVENT_BUFFER: usize = 64;

/// The messages of one channel, in offset order, each delivered once, across reconnects.
/// Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub channel: String,
    pub ack: Ack,
    messages: mpsc::UnboundedReceiver<Message>,
}

impl Subscription {
    /// The next message; `None` once the subscription has ended (unsubscribed, refused on
    /// resume, or the client closed).
    pub async fn recv(&mut self) -> Option<Message> {
        self.messages.recv().await
    }
}

/// A connection to a wsfleet fleet that survives node drains and failures. Cheap to clone;
/// the connection closes when the last clone is dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<Event>,
    session: watch::Receiver<Option<Session>>,
    directs: Arc<Mutex<Option<mpsc::UnboundedReceiver<Direct>>>>,
    directs_taken: Arc<AtomicBool>,
    request_timeout: Duration,
}

impl Client {
    /// Connects to one gateway URL, with an optional JWT.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Client, Error> {
        let mut config = ClientConfig::new([url]);
        config.token = token.map(str::to_owned);
        Client::connect_with(config).await
    }

    /// Connects with full configuration. Returns once the first session is established, or
    /// fails after the first round of attempts over every endpoint.
    pub async fn connect_with(config: ClientConfig) -> Result<Client, Error> {
        if config.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, mut event_rx) = broadcast::channel(EVENT_BUFFER);
        let (session_tx, session) = watch::channel(None);
        let (directs_tx, directs_rx) = mpsc::unbounded_channel();
        let directs_taken = Arc::new(AtomicBool::new(false));
        let client = Client {
            commands,
            events: events.clone(),
            session: session.clone(),
            directs: Arc::new(Mutex::new(Some(directs_rx))),
            directs_taken: directs_taken.clone(),
            request_timeout: config.request_timeout,
        };
        let first_round = config
            .connect_timeout
            .saturating_mul(config.endpoints.len() as u32 + 1);
        let driver = Driver::new(
            config,
            command_rx,
            events,
            session_tx,
            directs_tx,
            directs_taken,
        );
        tokio::spawn(driver.run());

        let deadline = tokio::time::Instant::now() + first_round;
        let mut last_failure = None::<String>;
        let failed = |last: &Option<String>| {
            Error::Connect(
                last.clone()
                    .unwrap_or_else(|| "the connection task ended".into()),
            )
        };
        // Returns on the first `Connected`: the driver stores the session before it emits the
        // event, so the session is there, and a receiver the caller makes after this returns
        // does not see the first connection's event.
        loop {
            tokio::select! {
                event = event_rx.recv() => match event {
                    Ok(Event::Connected { .. }) => return Ok(client),
                    Ok(Event::Disconnected { reason, .. }) => last_failure = Some(reason),
                    Ok(Event::GaveUp) | Err(broadcast::error::RecvError::Closed) => {
                        return Err(failed(&last_failure));
                    }
                    // Fell behind a burst of failed attempts: the session says whether one
                    // of them got through.
                    Err(broadcast::error::RecvError::Lagged(_)) if session.borrow().is_some() => {
                        return Ok(client);
                    }
                    _ => {}
                },
                () = tokio::time::sleep_until(deadline) => {
                    let last = last_failure.map(|r| format!("; last attempt: {r}")).unwrap_or_default();
                    return Err(Error::Connect(format!("no session within {first_round:?}{last}")));
                }
            }
        }
    }

    /// Lifecycle events from now on. A receiver that falls more than 64 events behind loses
    /// the oldest ones (and is told so by `broadcast`).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The current session, or `None` while disconnected.
    pub fn session(&self) -> Option<Session> {
        self.session.borrow().clone()
    }

    /// Direct messages sent to this client. Can be taken once; until then directs are dropped.
    pub async fn directs(&self) -> Option<mpsc::UnboundedReceiver<Direct>> {
        let taken = self.directs.lock().await.take();
        if taken.is_some() {
            self.directs_taken.store(true, Ordering::Release);
        }
        taken
    }

    /// Subscribes to `channel`. The subscription is resumed from its last delivered offset on
    /// every reconnect. Resolves with the gateway's first ack.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, Error> {
        if !valid_channel(channel) {
            return Err(Error::InvalidChannel(channel.to_owned()));
        }
        let (tx, messages) = mpsc::unbounded_channel();
        let (reply, ack) = oneshot::channel();
        self.command(Command::Subscribe {
            channel: channel.to_owned(),
            messages: tx,
            reply,
        })?;
        let ack = self.answer(ack).await?;
        Ok(Subscription {
            channel: channel.to_owned(),
            ack,
            messages,
        })
    }

    /// Unsubscribes from `channel`; its [`Subscription`] ends.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), Error> {
        let (reply, ack) = oneshot::channel();
        self.command(Command::Unsubscribe {
            channel: channel.to_owned(),
            reply,
        })?;
        self.answer(ack).await.map(drop)
    }

    /// Publishes `data` on `channel`. The frame is queued before this returns, so publishes
    /// made one after another are sent in order; the future resolves with the gateway's ack,
    /// which carries the message's offset and epoch.
    pub fn publish(
        &self,
        channel: &str,
        data: Value,
    ) -> impl Future<Output = Result<Ack, Error>> + use<> {
        self.publish_request(channel, data, None)
    }

    /// Publishes at most once per `idempotency_key` (and channel) within the gateway's
    /// idempotency window (default 5 minutes). After a publish failed with
    /// [`Error::Timeout`] or [`Error::Disconnected`] it may or may not have been delivered;
    /// retrying with the same key is safe: a publish that did go through answers with its
    /// first offset and [`Ack::duplicate`], and subscribers get the message once.
    pub fn publish_with_key(
        &self,
        channel: &str,
        data: Value,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<Ack, Error>> + use<> {
        self.publish_request(channel, data, Some(idempotency_key.to_owned()))
    }

    fn publish_request(
        &self,
        channel: &str,
        data: Value,
        idempotency_key: Option<String>,
    ) -> impl Future<Output = Result<Ack, Error>> + use<> {
        let queued = if valid_channel(channel) {
            let (reply, ack) = oneshot::channel();
            self.command(Command::Publish {
                channel: channel.to_owned(),
                data,
                idempotency_key,
                reply,
            })
            .map(|()| ack)
        } else {
            Err(Error::InvalidChannel(channel.to_owned()))
        };
        self.answer_queued(queued)
    }

    /// Sends `data` to the client with id `to`, wherever in the fleet it is connected.
    pub fn send(&self, to: &str, data: Value) -> impl Future<Output = Result<(), Error>> + use<> {
        let (reply, ack) = oneshot::channel();
        let queued = self
            .command(Command::Send {
                to: to.to_owned(),
                data,
                reply,
            })
            .map(|()| ack);
        let answer = self.answer_queued(queued);
        async move { answer.await.map(drop) }
    }

    /// Closes the connection; every subscription ends.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    fn command(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).map_err(|_| Error::Closed)
    }

    async fn answer<T>(&self, ack: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        wait_answer(ack, self.request_timeout).await
    }

    fn answer_queued<T>(
        &self,
        queued: Result<oneshot::Receiver<Result<T, Error>>, Error>,
    ) -> impl Future<Output = Result<T, Error>> + use<T> {
        let timeout = self.request_timeout;
        async move { wait_answer(queued?, timeout).await }
    }
}

async fn wait_answer<T>(
    ack: oneshot::Receiver<Result<T, Error>>,
    timeout: Duration,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, ack).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(Error::Closed),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}
