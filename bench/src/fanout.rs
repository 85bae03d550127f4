//! The `fanout` scenario: S subscribers spread round-robin over the gateway nodes on one
//! channel, and a publisher on its own connection publishing at a fixed rate with a sequence
//! number and send timestamp in each message. Reports delivery rate, end-to-end latency (all,
//! and split by whether the subscriber shares the publisher's node), and per-subscriber loss,
//! duplicates and reordering as the application sees them through the Rust client.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::stream::StreamExt;
use serde::Serialize;
use serde_json::Value;

use tokio::sync::{broadcast, watch};
use wsfleet_client::{Client, ClientConfig, Event, Subscription};

use crate::latency::{self, Latency, Summary};
use crate::peer::Protocol;
use crate::procstat;
use crate::sequence::{self, MAX_MESSAGES, SeqTracker, now_us, stamp};

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Gateway WebSocket URLs; subscribers are spread over them round-robin.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws"
    )]
    pub urls: Vec<String>,
    /// Subscribers.
    #[arg(short = 's', long, default_value_t = 100)]
    pub subscribers: usize,
    /// Messages per second from the publisher.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The channel everyone subscribes to.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Index into --urls of the node the publisher connects to.
    #[arg(long, default_value_t = 0)]
    pub publisher_node: usize,
    /// Gateway process ids whose CPU time to measure (repeat or comma-separate).
    #[arg(long = "gateway-pid", value_delimiter = ',')]
    pub gateway_pids: Vec<u32>,
    /// Longest wait for in-flight deliveries after the last publish.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// Subscribers connecting at once during set-up.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// JWT for gateways that require one.
    #[arg(long)]
    pub token: Option<String>,
    /// The system under test. For the peers, --urls are node bases (ws://127.0.0.1:PORT) and
    /// the adapter adds the protocol's path.
    #[arg(long, value_enum, default_value_t = Protocol::Wsfleet)]
    pub protocol: Protocol,
}

/// What one subscriber saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriberReport {
    pub node: String,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Messages whose `data` was not ours (no `seq`/`ts_us`).
    pub foreign: u64,
    /// Times this subscriber's connection was lost (e.g. closed as a slow consumer).
    pub disconnects: u64,
    /// Messages the client reported as skipped by a jump in offsets.
    pub gap_missed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuCost {
    pub pids: Vec<u32>,
    pub cpu_us: u64,
    pub cpu_seconds_per_delivery: f64,
    pub deliveries_per_cpu_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    pub protocol: Protocol,
    pub urls: Vec<String>,
    pub channel: String,
    pub subscribers: usize,
    pub subscribers_connected: usize,
    pub subscribe_failures: Vec<String>,
    pub publisher_node: String,
    pub rate: f64,
    pub published: u64,
    pub publish_failed: u64,
    pub publish_secs: f64,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub deliveries_per_sec: f64,
    /// From the first publish to the last delivery: longer than `publish_secs` when the system
    /// falls behind the publish rate.
    pub delivery_secs: f64,
    /// Deliveries ÷ `delivery_secs`: what the system sustained (its saturation rate when the
    /// publish rate is above it).
    pub sustained_deliveries_per_sec: f64,
    pub latency: Summary,
    pub cross_node_latency: Summary,
    pub same_node_latency: Summary,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub subscribers_with_loss: usize,
    /// True when `--settle-secs` ran out before every subscriber had every message: "lost"
    /// then includes messages still in flight.
    pub settle_expired: bool,
    pub disconnects: u64,
    /// Messages the clients saw skipped (offset jumps), summed over subscribers.
    pub gap_missed: u64,
    /// CPU time of this load process over the publish + settle phase, and as a share of one
    /// core: near the machine's core count, the load generator is the bottleneck.
    pub load_cpu_us: u64,
    pub load_cpu_share: f64,
    pub gateway: Option<CpuCost>,
    pub per_subscriber: Vec<SubscriberReport>,
}

struct Subscriber {
    _client: Client,
    node: String,
    subscription: Subscription,
    events: broadcast::Receiver<Event>,
}

async fn connect_subscriber(
    url: String,
    channel: String,
    token: Option<String>,
) -> Result<Subscriber> {
    let mut config = ClientConfig::new([url.clone()]);
    config.token = token;
    // A failed subscriber is reported, not retried forever.
    config.max_reconnect_attempts = Some(5);
    let client = Client::connect_with(config)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let events = client.events();
    let node = client.session().map(|s| s.node).unwrap_or_default();
    let subscription = client
        .subscribe(&channel)
        .await
        .with_context(|| format!("subscribing on {url}"))?;
    Ok(Subscriber {
        _client: client,
        node,
        subscription,
        events,
    })
}

/// What a consuming task hands back.
pub(crate) struct Consumed {
    pub(crate) report: SubscriberReport,
    pub(crate) tracker: SeqTracker,
    /// When the last stamped message arrived (µs since the epoch, 0 if none did).
    pub(crate) last_received_us: u64,
    /// The subscriber's connection, closed only once every consumer is done and the servers'
    /// CPU is sampled: closing early would load the servers while others still receive.
    pub(crate) _connection: Box<dyn Send>,
}

/// What one subscriber has received so far, counted as messages arrive.
pub(crate) struct Received {
    report: SubscriberReport,
    tracker: SeqTracker,
    last_received_us: u64,
}

impl Received {
    pub(crate) fn new(node: &str) -> Received {
        Received {
            report: SubscriberReport {
                node: node.to_owned(),
                ..SubscriberReport::default()
            },
            tracker: SeqTracker::default(),
            last_received_us: 0,
        }
    }

    /// Counts one data message; a stamped one also goes into the group's latency.
    pub(crate) fn receive(&mut self, data: &Value, group: &Group) {
        let received_at = now_us();
        self.report.received += 1;
        match stamp(data) {
            Some((seq, sent_at)) => {
                if let Ok(mut group) = group.lock() {
                    group.record(received_at.saturating_sub(sent_at));
                }
                self.tracker.record(seq);
                self.last_received_us = received_at;
            }
            None => self.report.foreign += 1,
        }
    }

    /// Whether all `total` messages arrived (each counted once).
    pub(crate) fn has_all(&self, total: u64) -> bool {
        self.tracker.unique >= total
    }

    pub(crate) fn report_mut(&mut self) -> &mut SubscriberReport {
        &mut self.report
    }

    /// The consumer's result; `connection` stays open until the result is dropped.
    pub(crate) fn finish(self, connection: impl Send + 'static) -> Consumed {
        Consumed {
            report: self.report,
            tracker: self.tracker,
            last_received_us: self.last_received_us,
            _connection: Box::new(connection),
        }
    }
}

/// Latency of one group of subscribers (same node as the publisher, or another node). Shared
/// by the group's tasks: one histogram per subscriber would cost ~140 KiB each.
pub(crate) type Group = Arc<Mutex<Latency>>;

/// Reads one subscription until it has all `total` messages, or until `stop`.
async fn consume(
    mut sub: Subscriber,
    group: Group,
    total: u64,
    mut stop: watch::Receiver<bool>,
) -> Consumed {
    let mut received = Received::new(&sub.node);
    while !received.has_all(total) {
        tokio::select! {
            message = sub.subscription.recv() => {
                let Some(message) = message else { break };
                received.receive(&message.data, &group);
            }
            _ = stop.changed() => break,
        }
    }
    let report = received.report_mut();
    loop {
        match sub.events.try_recv() {
            Ok(Event::Disconnected { .. }) => report.disconnects += 1,
            Ok(Event::Gap { missed, .. }) => report.gap_missed += missed,
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    received.finish(sub)
}

/// Checks the arguments every protocol's fan-out shares; the number of messages to publish.
pub fn message_count(args: &FanoutArgs) -> Result<u64> {
    if args.urls.is_empty() || args.subscribers == 0 || args.connect_concurrency == 0 {
        bail!("need at least one URL, one subscriber and a connect concurrency of 1");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    let total = (args.rate * args.duration as f64).round() as u64;
    if total == 0 || total > MAX_MESSAGES {
        bail!("rate x duration must be 1..={MAX_MESSAGES} messages, got {total}");
    }
    if args.urls.get(args.publisher_node).is_none() {
        bail!("--publisher-node is not an index into --urls");
    }
    Ok(total)
}

/// The fan-out against wsfleet gateways with the Rust client (`--protocol wsfleet`); the
/// peers' protocols are `peer::fanout::run`.
pub async fn run(args: FanoutArgs, total: u64) -> Result<FanoutReport> {
    let publisher_url = &args.urls[args.publisher_node];

    // Set-up: every subscriber subscribed before the first publish.
    let (subscribers, subscribe_failures) = subscribe_all(&args, |url| {
        connect_subscriber(url, args.channel.clone(), args.token.clone())
    })
    .await;
    let mut config = ClientConfig::new([publisher_url.clone()]);
    config.token = args.token.clone();
    let publisher = Client::connect_with(config)
        .await
        .context("connecting the publisher")?;
    let publisher_node = publisher.session().map(|s| s.node).unwrap_or_default();

    let mut consumers = Subscribers::new(subscribe_failures, publisher_node);
    for sub in subscribers {
        let node = sub.node.clone();
        consumers.spawn(&node, |group, stop| consume(sub, group, total, stop));
    }
    let publish = sequence::publish(&publisher, &args.channel, args.rate, total);
    measure(&args, total, consumers, publish).await
}

/// Connects and subscribes `--subscribers` subscribers, spread round-robin over `--urls`,
/// `--connect-concurrency` at a time; returns those that made it and why the others did not.
pub(crate) async fn subscribe_all<S, F>(
    args: &FanoutArgs,
    connect: impl Fn(String) -> F,
) -> (Vec<S>, Vec<String>)
where
    F: Future<Output = Result<S>>,
{
    let setups = futures::stream::iter(
        (0..args.subscribers).map(|i| connect(args.urls[i % args.urls.len()].clone())),
    )
    .buffer_unordered(args.connect_concurrency)
    .collect::<Vec<_>>()
    .await;
    let mut subscribers = Vec::new();
    let mut failures = Vec::new();
    for setup in setups {
        match setup {
            Ok(sub) => subscribers.push(sub),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    (subscribers, failures)
}

/// Subscribers of a fan-out run, subscribed and consuming, and what they report back to.
pub(crate) struct Subscribers {
    pub(crate) subscribe_failures: Vec<String>,
    pub(crate) publisher_node: String,
    /// Each reads until it has every message published (the count is known before the
    /// first one: rate × duration), so the end of publishing wakes nobody.
    pub(crate) consumers: Vec<tokio::task::JoinHandle<Consumed>>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) same: Group,
    pub(crate) cross: Group,
}

impl Subscribers {
    pub(crate) fn new(subscribe_failures: Vec<String>, publisher_node: String) -> Subscribers {
        Subscribers {
            subscribe_failures,
            publisher_node,
            consumers: Vec::new(),
            stop: watch::channel(false).0,
            same: Group::default(),
            cross: Group::default(),
        }
    }

    /// Spawns the consumer of a subscriber on `node`, with the latency group it belongs to
    /// (same node as the publisher, or another) and the run's stop signal.
    pub(crate) fn spawn<F>(
        &mut self,
        node: &str,
        consume: impl FnOnce(Group, watch::Receiver<bool>) -> F,
    ) where
        F: Future<Output = Consumed> + Send + 'static,
    {
        let group = if node == self.publisher_node {
            &self.same
        } else {
            &self.cross
        };
        let consumer = consume(group.clone(), self.stop.subscribe());
        self.consumers.push(tokio::spawn(consumer));
    }
}

/// The measured phase, the same for every protocol: runs `publish` (which sends `total`
/// stamped messages and returns which were acknowledged), lets deliveries settle, and sums up
/// with the servers' and the load process's CPU over that time.
pub(crate) async fn measure(
    args: &FanoutArgs,
    total: u64,
    subscribers: Subscribers,
    publish: impl Future<Output = Vec<bool>>,
) -> Result<FanoutReport> {
    let Subscribers {
        subscribe_failures,
        publisher_node,
        consumers,
        stop,
        same,
        cross,
    } = subscribers;
    let subscribers_connected = consumers.len();
    let before = procstat::sample_all(&args.gateway_pids)?;
    let load_before = procstat::sample(std::process::id())?;
    let started = Instant::now();
    let started_us = now_us();
    let acked = publish.await;
    let publish_secs = started.elapsed().as_secs_f64();
    let published = acked.iter().filter(|ok| **ok).count() as u64;
    // Consumers wait for every message sent, not only the acknowledged ones: under saturation
    // an ack can time out while its message is still delivered, and stopping at the acked
    // count would cut the deliveries short. Loss still counts acknowledged messages only.

    // Let deliveries in flight arrive, bounded by --settle-secs.
    let (consumed, settle_expired) =
        sequence::settle(consumers, Duration::from_secs(args.settle_secs), stop).await;
    let after = procstat::sample_all(&args.gateway_pids)?;
    let load_after = procstat::sample(std::process::id())?;
    let outcome = Outcome {
        subscribe_failures,
        publisher_node,
        subscribers_connected,
        published,
        total,
        publish_secs,
        acked,
        settle_expired,
        load_cpu_us: load_after.cpu_us.saturating_sub(load_before.cpu_us),
        elapsed_secs: started.elapsed().as_secs_f64(),
        started_us,
    };
    let (same, cross) = (lock(&same), lock(&cross));
    Ok(summarize(
        args,
        outcome,
        consumed,
        [&same, &cross],
        &before,
        &after,
    ))
}

/// What a run produced, before per-subscriber results are folded in.
struct Outcome {
    subscribe_failures: Vec<String>,
    publisher_node: String,
    subscribers_connected: usize,
    published: u64,
    total: u64,
    publish_secs: f64,
    acked: Vec<bool>,
    settle_expired: bool,
    load_cpu_us: u64,
    elapsed_secs: f64,
    /// When publishing started (µs since the epoch).
    started_us: u64,
}

/// The group's histogram; a poisoned lock (a panicked task) still holds valid counts.
fn lock(group: &Group) -> MutexGuard<'_, Latency> {
    group
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn summarize(
    args: &FanoutArgs,
    run: Outcome,
    consumed: Vec<Consumed>,
    [same, cross]: [&Latency; 2],
    before: &[procstat::Sample],
    after: &[procstat::Sample],
) -> FanoutReport {
    let mut all = Latency::new();
    all.merge(same);
    all.merge(cross);
    let mut per_subscriber = Vec::with_capacity(consumed.len());
    let last_received_us = consumed.iter().map(|c| c.last_received_us).max();
    let delivery_secs = last_received_us
        .filter(|last| *last > run.started_us)
        .map_or(0.0, |last| (last - run.started_us) as f64 / 1e6);
    for mut c in consumed {
        c.report.lost = c.tracker.lost(&run.acked);
        c.report.duplicated = c.tracker.duplicated;
        c.report.out_of_order = c.tracker.out_of_order;
        per_subscriber.push(c.report);
    }
    let deliveries: u64 = per_subscriber.iter().map(|s| s.received).sum();
    let cpu_us: u64 = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.cpu_us.saturating_sub(b.cpu_us))
        .sum();
    let gateway = (!args.gateway_pids.is_empty()).then(|| CpuCost {
        pids: args.gateway_pids.clone(),
        cpu_us,
        cpu_seconds_per_delivery: if deliveries > 0 {
            cpu_us as f64 / 1e6 / deliveries as f64
        } else {
            0.0
        },
        deliveries_per_cpu_second: if cpu_us > 0 {
            deliveries as f64 / (cpu_us as f64 / 1e6)
        } else {
            0.0
        },
    });
    FanoutReport {
        scenario: "fanout",
        protocol: args.protocol,
        urls: args.urls.clone(),
        channel: args.channel.clone(),
        subscribers: args.subscribers,
        subscribers_connected: run.subscribers_connected,
        subscribe_failures: run.subscribe_failures,
        publisher_node: run.publisher_node,
        rate: args.rate,
        published: run.published,
        publish_failed: run.total - run.published,
        publish_secs: run.publish_secs,
        deliveries,
        expected_deliveries: run.published * run.subscribers_connected as u64,
        deliveries_per_sec: if run.publish_secs > 0.0 {
            deliveries as f64 / run.publish_secs
        } else {
            0.0
        },
        delivery_secs,
        sustained_deliveries_per_sec: if delivery_secs > 0.0 {
            deliveries as f64 / delivery_secs
        } else {
            0.0
        },
        settle_expired: run.settle_expired,
        disconnects: per_subscriber.iter().map(|s| s.disconnects).sum(),
        gap_missed: per_subscriber.iter().map(|s| s.gap_missed).sum(),
        load_cpu_us: run.load_cpu_us,
        load_cpu_share: run.load_cpu_us as f64 / 1e6 / run.elapsed_secs.max(1e-9),
        latency: all.summary(),
        cross_node_latency: cross.summary(),
        same_node_latency: same.summary(),
        lost: per_subscriber.iter().map(|s| s.lost).sum(),
        duplicated: per_subscriber.iter().map(|s| s.duplicated).sum(),
        out_of_order: per_subscriber.iter().map(|s| s.out_of_order).sum(),
        subscribers_with_loss: per_subscriber.iter().filter(|s| s.lost > 0).count(),
        gateway,
        per_subscriber,
    }
}

pub fn print_human(r: &FanoutReport) {
    let show = |s: &Summary| {
        if s.count == 0 {
            return "n/a (no subscriber in this group)".to_owned();
        }
        format!(
            "p50 {} p90 {} p99 {} max {} (n={})",
            latency::human(s.p50_us),
            latency::human(s.p90_us),
            latency::human(s.p99_us),
            latency::human(s.max_us),
            s.count
        )
    };
    println!(
        "fanout ({}): {} of {} subscribers on {} node URL(s), channel {:?}, publisher on node {:?}",
        r.protocol.name(),
        r.subscribers_connected,
        r.subscribers,
        r.urls.len(),
        r.channel,
        r.publisher_node
    );
    for failure in r.subscribe_failures.iter().take(5) {
        println!("  subscribe failure: {failure}");
    }
    println!(
        "  published {} at {}/s over {:.2}s ({} not acknowledged)",
        r.published, r.rate, r.publish_secs, r.publish_failed
    );
    println!(
        "  deliveries: {} of {} expected, {:.0}/s; last one {:.2}s after the first publish ({:.0}/s sustained)",
        r.deliveries,
        r.expected_deliveries,
        r.deliveries_per_sec,
        r.delivery_secs,
        r.sustained_deliveries_per_sec
    );
    println!("  latency all:        {}", show(&r.latency));
    println!("  latency cross-node: {}", show(&r.cross_node_latency));
    println!("  latency same node:  {}", show(&r.same_node_latency));
    let in_flight = if r.settle_expired {
        " (settle time ran out: includes messages still in flight)"
    } else {
        ""
    };
    println!(
        "  lost {}{in_flight} ({} subscribers with loss), duplicated {}, out of order {}, disconnects {}, offset gaps {}",
        r.lost, r.subscribers_with_loss, r.duplicated, r.out_of_order, r.disconnects, r.gap_missed
    );
    println!(
        "  load generator: {:.2} CPU s ({:.0}% of one core)",
        r.load_cpu_us as f64 / 1e6,
        r.load_cpu_share * 100.0
    );
    if let Some(g) = &r.gateway {
        println!(
            "  gateway {:?}: {:.3} CPU s total, {:.2} µs CPU per delivery, {:.0} deliveries per CPU second",
            g.pids,
            g.cpu_us as f64 / 1e6,
            g.cpu_seconds_per_delivery * 1e6,
            g.deliveries_per_cpu_second
        );
    }
}
