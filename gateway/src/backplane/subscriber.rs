//! The subscriber task: owns the subscription connection, the per-channel reference counts,
//! the liveness probe and reconnection. It is the only place that decides whether the
//! backplane is Up: Up means a probe published on every probe topic came back over the
//! current subscription connection within the deadline. Any loss or failed probe tears the
//! connection down and rebuilds it (with capped, jittered backoff), re-subscribing everything;
//! the follower then catches each channel up from history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::config::{BackplaneConfig, RedisMode};
use super::envelope::{self, NodeMessage};
use super::error::BackplaneError;
use super::follower::Follower;
use super::keys::Keys;
use super::links::{Commands, SubConn};
use super::probes;
use super::stats::Counters;
use super::{BackplaneState, Delivery};

/// Upper bound for one (un)subscribe round trip before the link is considered broken.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Queued pushes read before an overdue probe counts as failed.
const MAX_QUEUED_BEFORE_VERDICT: usize = 100_000;

pub(crate) enum Request {
    Subscribe {
        channel: String,
        reply: oneshot::Sender<Result<(), BackplaneError>>,
    },
    Unsubscribe {
        channel: String,
        reply: oneshot::Sender<()>,
    },
}

struct Link {
    conn: SubConn,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

/// What the task does when its deadline passes.
enum LinkState {
    /// No link: try to connect.
    Reconnecting,
    /// Linked and verified: send the next probe.
    Idle,
    /// A probe with this token is on its way to each of `pending`; the deadline is its
    /// timeout.
    Probing {
        token: String,
        pending: Vec<String>,
        sent_at: Instant,
    },
}

pub(crate) struct Subscriber {
    config: Arc<BackplaneConfig>,
    keys: Keys,
    node_channel: String,
    commands: Arc<Commands>,
    requests: mpsc::Receiver<Request>,
    deliveries: mpsc::UnboundedSender<Delivery>,
    state: watch::Sender<BackplaneState>,
    counters: Arc<Counters>,
    /// Local subscriber count per channel; a channel is subscribed in Redis while present.
    counts: HashMap<String, usize>,
    follower: Follower,
    /// Unsubscribe confirmations we still expect for topics we left ourselves; any other
    /// unsubscribe push is Redis dropping a wanted subscription (a slot moved in Cluster).
    own_unsubscribes: HashMap<String, usize>,
    link: Option<Link>,
    /// Topics the probe goes through (node channel; one per master in Cluster).
    probe_topics: Vec<String>,
    phase: LinkState,
    deadline: Instant,
    backoff: Backoff,
}

impl Subscriber {
    pub fn new(
        config: Arc<BackplaneConfig>,
        commands: Arc<Commands>,
        requests: mpsc::Receiver<Request>,
        deliveries: mpsc::UnboundedSender<Delivery>,
        state: watch::Sender<BackplaneState>,
        counters: Arc<Counters>,
    ) -> Self {
        let keys = Keys::new(&config.key_prefix, &config.node_id);
        let follower = Follower::new(
            commands.clone(),
            keys.clone(),
            deliveries.clone(),
            counters.clone(),
        );
        Self {
            node_channel: keys.own_node_channel(),
            keys,
            config,
            commands,
            requests,
            deliveries,
            state,
            counters,
            counts: HashMap::new(),
            follower,
            own_unsubscribes: HashMap::new(),
            link: None,
            probe_topics: Vec::new(),
            phase: LinkState::Reconnecting,
            deadline: Instant::now(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    /// Runs until the backplane handle is dropped (the request channel closes).
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(request) => self.handle_request(request).await,
                    None => return,
                },
                push = next_push(&mut self.link) => match push {
                    Some(push) => self.handle_push(push).await,
                    None => self.lose_link("subscription connection closed"),
                },
                () = sleep_until(self.deadline) => self.on_deadline().await,
            }
        }
    }

    async fn handle_request(&mut self, request: Request) {
        match request {
            Request::Subscribe { channel, reply } => {
                let result = self.subscribe(channel).await;
                let _ = reply.send(result);
            }
            Request::Unsubscribe { channel, reply } => {
                self.unsubscribe(&channel).await;
                let _ = reply.send(());
            }
        }
    }

    /// Counts the subscriber; the first one subscribes the topic in Redis. The count stays even
    /// when Redis is unreachable: the topic is subscribed again on reconnect.
    async fn subscribe(&mut self, channel: String) -> Result<(), BackplaneError> {
        let topic = self.keys.channel(&channel).live;
        let count = self.counts.entry(channel).or_insert(0);
        *count += 1;
        let first = *count == 1;
        let Some(link) = self.link.as_mut() else {
            return Err(BackplaneError::Unavailable);
        };
        if first {
            match timeout(SUBSCRIBE_TIMEOUT, link.conn.subscribe(&[topic])).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    self.lose_link(&format!("subscribe failed: {error}"));
                    return Err(BackplaneError::Redis(error));
                }
                Err(_) => {
                    self.lose_link("subscribe timed out");
                    return Err(BackplaneError::Unavailable);
                }
            }
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, channel: &str) {
        let Some(count) = self.counts.get_mut(channel) else {
            warn!(channel, "unsubscribe without a matching subscribe");
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.counts.remove(channel);
        self.follower.forget(channel);
        let topic = self.keys.channel(channel).live;
        if let Some(link) = self.link.as_mut() {
            *self.own_unsubscribes.entry(topic.clone()).or_insert(0) += 1;
            match timeout(SUBSCRIBE_TIMEOUT, link.conn.unsubscribe(&topic)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => self.lose_link(&format!("unsubscribe failed: {error}")),
                Err(_) => self.lose_link("unsubscribe timed out"),
            }
        }
    }

    async fn handle_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some((topic, payload)) = topic_and_payload(push.data) {
                    self.route(&topic, payload).await;
                }
            }
            PushKind::Disconnection => self.lose_link("disconnected from redis"),
            PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                // `[topic, remaining subscription count]`
                if let Some(Value::BulkString(topic)) = push.data.first() {
                    self.on_unsubscribed(&String::from_utf8_lossy(topic));
                }
            }
            // Subscription confirmations and other pushes carry nothing to deliver.
            _ => {}
        }
    }

    /// Redis Cluster unsubscribes a shard channel by itself when its slot moves to another
    /// master; rebuilding the link subscribes it again where it now lives.
    fn on_unsubscribed(&mut self, topic: &str) {
        if let Some(pending) = self.own_unsubscribes.get_mut(topic) {
            *pending -= 1;
            if *pending == 0 {
                self.own_unsubscribes.remove(topic);
            }
            return;
        }
        let wanted = self.is_node_topic(topic)
            || self
                .keys
                .channel_of_live_topic(topic)
                .is_some_and(|channel| self.counts.contains_key(channel));
        if wanted {
            self.lose_link("redis dropped a wanted subscription");
        }
    }

    /// The node channel or one of the probe topics.
    fn is_node_topic(&self, topic: &str) -> bool {
        topic == self.node_channel || self.probe_topics.iter().any(|t| t == topic)
    }

    async fn route(&mut self, topic: &str, payload: Bytes) {
        if self.is_node_topic(topic) {
            match envelope::decode_node(payload) {
                Ok(NodeMessage::Direct { to, from, data }) => {
                    let _ = self.deliveries.send(Delivery::Direct { to, from, data });
                }
                Ok(NodeMessage::Probe { token }) => self.probe_returned(topic, &token),
                Err(error) => {
                    self.counters.malformed();
                    warn!(topic, %error, "dropping malformed node message");
                }
            }
        } else if let Some(channel) = self.keys.channel_of_live_topic(topic) {
            // Messages still in flight after the last local subscriber left are not wanted.
            if !self.counts.contains_key(channel) {
                return;
            }
            match envelope::decode_live(payload) {
                Ok(message) => self.follower.on_message(channel.to_string(), message).await,
                Err(error) => {
                    self.counters.malformed();
                    warn!(topic, %error, "dropping malformed channel message");
                }
            }
        }
    }

    async fn on_deadline(&mut self) {
        match self.phase {
            LinkState::Reconnecting => self.reconnect().await,
            LinkState::Idle => self.send_probe(),
            LinkState::Probing { .. } => self.probe_overdue().await,
        }
    }

    /// The echo may already be queued behind a burst or a slow catch-up: read what has
    /// arrived (boundedly) before declaring the link broken.
    async fn probe_overdue(&mut self) {
        for _ in 0..MAX_QUEUED_BEFORE_VERDICT {
            let Some(push) = self
                .link
                .as_mut()
                .and_then(|link| link.pushes.try_recv().ok())
            else {
                break;
            };
            self.handle_push(push).await;
            if !matches!(self.phase, LinkState::Probing { .. }) {
                return;
            }
        }
        self.counters.probe_failed();
        self.lose_link("liveness probe not echoed in time");
    }

    async fn reconnect(&mut self) {
        match self.establish().await {
            Ok(link) => {
                debug!(
                    channels = self.counts.len(),
                    "subscription connection established"
                );
                self.link = Some(link);
                self.counters.link_established();
                // Subscribed again: whatever was published while the link was down is in
                // history, and live duplicates of it are dropped by the cursors.
                self.follower.catch_up_all().await;
                // Up only once a probe proves the new link delivers.
                self.send_probe();
            }
            Err(error) => {
                self.phase = LinkState::Reconnecting;
                let delay = self.backoff.next_delay();
                self.deadline = Instant::now() + delay;
                // A new reason (a wrong CA, a refused password) is worth a warning once; the
                // same one again at every retry is not.
                if self.counters.connect_failed(&error.to_string()) {
                    warn!(%error, ?delay, "redis backplane cannot connect");
                } else {
                    debug!(%error, ?delay, "redis backplane reconnect failed");
                }
            }
        }
    }

    /// Connects and subscribes the node channel, the probe topics and every channel with local
    /// subscribers.
    async fn establish(&mut self) -> Result<Link, BackplaneError> {
        self.commands.ensure().await?;
        self.probe_topics = match self.commands.mode() {
            RedisMode::Standalone => vec![self.node_channel.clone()],
            RedisMode::Cluster => {
                let mut conn = self.commands.get()?;
                probes::cluster_probe_topics(&mut conn, &self.keys).await?
            }
        };
        let (mut conn, pushes) = SubConn::open(&self.config).await?;
        let mut topics = vec![self.node_channel.clone()];
        topics.extend(
            self.probe_topics
                .iter()
                .filter(|t| **t != topics[0])
                .cloned()
                .collect::<Vec<_>>(),
        );
        topics.extend(self.counts.keys().map(|c| self.keys.channel(c).live));
        let subscribe_all = SUBSCRIBE_TIMEOUT * (1 + topics.len() as u32 / 1000);
        timeout(subscribe_all, conn.subscribe(&topics))
            .await
            .map_err(|_| BackplaneError::Unavailable)??;
        Ok(Link { conn, pushes })
    }

    /// Publishes a probe on every probe topic through the command connection; their echoes on
    /// the subscription connection (see `probe_returned`) prove the whole path works.
    fn send_probe(&mut self) {
        let token = format!("{:016x}", rand::random::<u64>());
        let payload = envelope::encode_probe(&token);
        let command = match self.commands.mode() {
            RedisMode::Standalone => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        };
        if let Ok(conn) = self.commands.get() {
            for topic in self.probe_topics.clone() {
                let (mut conn, payload) = (conn.clone(), payload.clone());
                // A failed publish simply never echoes; the probe deadline handles it.
                tokio::spawn(async move {
                    let _ = redis::cmd(command)
                        .arg(topic)
                        .arg(payload)
                        .query_async::<i64>(&mut conn)
                        .await;
                });
            }
        }
        self.phase = LinkState::Probing {
            token,
            pending: self.probe_topics.clone(),
            sent_at: Instant::now(),
        };
        self.deadline = Instant::now() + self.config.probe_timeout;
    }

    fn probe_returned(&mut self, topic: &str, token: &str) {
        let LinkState::Probing {
            token: expected,
            pending,
            sent_at,
        } = &mut self.phase
        else {
            return;
        };
        // A late echo of an earlier probe proves nothing about the current link.
        if expected != token {
            return;
        }
        pending.retain(|t| t != topic);
        if !pending.is_empty() {
            return;
        }
        self.counters.probe_returned(sent_at.elapsed());
        self.counters.connected();
        self.backoff.reset();
        self.phase = LinkState::Idle;
        self.deadline = Instant::now() + self.config.probe_interval;
        self.state.send_if_modified(|state| {
            let changed = *state != BackplaneState::Up;
            if changed {
                info!(node = self.keys.node_id(), "redis backplane up");
            }
            *state = BackplaneState::Up;
            changed
        });
    }

    /// Drops the link (and, in cluster mode, the command connection whose routing may be
    /// stale), reports Down and schedules a reconnect.
    fn lose_link(&mut self, reason: &str) {
        if self.link.take().is_some() {
            self.counters.link_lost();
        }
        self.own_unsubscribes.clear();
        if self.commands.mode() == RedisMode::Cluster {
            self.commands.reset();
        }
        self.state.send_if_modified(|state| {
            let changed = *state != BackplaneState::Down;
            if changed {
                warn!(node = self.keys.node_id(), reason, "redis backplane down");
            }
            *state = BackplaneState::Down;
            changed
        });
        self.phase = LinkState::Reconnecting;
        self.deadline = Instant::now() + self.backoff.next_delay();
    }
}

async fn next_push(link: &mut Option<Link>) -> Option<PushInfo> {
    match link {
        Some(link) => link.pushes.recv().await,
        None => std::future::pending().await,
    }
}

/// `message`/`smessage` pushes carry `[topic, payload]`.
fn topic_and_payload(data: Vec<Value>) -> Option<(String, Bytes)> {
    let mut data = data.into_iter();
    let topic = match data.next()? {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        _ => return None,
    };
    let payload = match data.next()? {
        Value::BulkString(bytes) => Bytes::from(bytes),
        _ => return None,
    };
    Some((topic, payload))
}
