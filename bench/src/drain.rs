//! The `drain` scenario: N subscribed clients on one node, a publisher on another node sending
//! at a steady rate, and a drain of the first node (`POST /drain` on its admin port, or SIGTERM).
//! Reports the reconnect-per-second curve against the even rate (clients ÷ window), both as the
//! moments clients set out to reconnect and as the welcomes the other nodes gave them, the
//! drained node's remaining connections per second and its time to empty, and what every
//! client received: lost, duplicated, out of order, recoveries that failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::stream::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use wsfleet_client::{Client, ClientConfig, Event, Subscription};

use crate::admin::Admin;
use crate::dial::Target;
use crate::sequence::{self, MAX_MESSAGES, SeqTracker, stamp};

/// Open files the process needs besides one socket per client: the publisher, admin calls,
/// stdio, and clients whose old and new connections briefly overlap.
const FD_RESERVE: u64 = 256;
/// How often the drained node's `/status` is read.
const POLL: Duration = Duration::from_millis(250);
/// Publishing continues this long after the window so late movers are checked too.
const TAIL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// WebSocket URL of the node to drain; every client connects here first.
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws")]
    pub url: String,
    /// WebSocket URLs of the nodes that stay; clients move to them, the publisher uses the first.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8082/ws")]
    pub others: Vec<String>,
    /// Admin base URL of the node to drain (`/drain`, `/status`).
    #[arg(long, default_value = "http://127.0.0.1:9091")]
    pub admin_url: String,
    /// The drained node's drain token.
    #[arg(long, env = "WSFLEET_DRAIN_TOKEN", hide_env_values = true)]
    pub drain_token: Option<String>,
    /// Start the drain by sending SIGTERM to this process (the gateway) instead of `POST /drain`;
    /// the window is then the gateway's `--drain-window-secs`, which `--window-secs` must match.
    #[arg(long)]
    pub sigterm_pid: Option<u32>,
    /// Clients on the drained node.
    #[arg(short = 'n', long, default_value_t = 1_000)]
    pub clients: usize,
    /// Clients connecting at once during set-up.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Drain window: clients are told to reconnect at times spread over it.
    #[arg(long, default_value_t = 30)]
    pub window_secs: u64,
    /// Drain deadline handed to the node (defaults to the window + 30 s).
    #[arg(long)]
    pub deadline_secs: Option<u64>,
    /// Messages per second published on the channel throughout (0: no publisher).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// The channel every client subscribes to.
    #[arg(long, default_value = "bench.drain")]
    pub channel: String,
    /// Seconds of publishing before the drain starts.
    #[arg(long, default_value_t = 2)]
    pub lead_secs: u64,
    /// Longest wait, after the last publish, for clients still catching up.
    #[arg(long, default_value_t = 15)]
    pub settle_secs: u64,
    /// JWT for gateways that require one.
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub scenario: &'static str,
    pub url: String,
    pub others: Vec<String>,
    pub drained_node: String,
    pub trigger: &'static str,
    pub clients: usize,
    pub clients_connected: usize,
    pub connect_failures: Vec<String>,
    /// Clients whose first session was not on the drained node (should be 0).
    pub started_elsewhere: usize,
    pub window_secs: u64,
    /// Clients on the drained node ÷ window: the reconnects per second a perfectly even drain
    /// would cause.
    pub even_rate: f64,
    /// Per second since the drain started: the reconnect times clients were given (hint
    /// received + its `after_ms`): the schedule, without the load machine's stalls.
    pub scheduled_per_second: Vec<u64>,
    /// Per second since the drain started: clients that set out to reconnect (their first
    /// attempt after the hint, the handshakes the rest of the fleet must absorb).
    pub attempts_per_second: Vec<u64>,
    /// Per second since the drain started: clients welcomed by another node.
    pub welcomes_per_second: Vec<u64>,
    /// The drained node's connections at each second since the drain started (from `/status`).
    pub remaining_per_second: Vec<u64>,
    pub peak_scheduled_ratio: f64,
    pub peak_attempts_ratio: f64,
    pub peak_welcomes_ratio: f64,
    pub moved: usize,
    pub not_moved: usize,
    /// Clients that had a session on the drained node again after the drain started.
    pub returned_to_drained: usize,
    /// From the drain's start to the drained node reporting 0 connections (or going away).
    pub time_to_empty_secs: Option<f64>,
    pub last_welcome_secs: Option<f64>,
    pub rate: f64,
    pub published: u64,
    pub publish_failed: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub clients_with_loss: usize,
    pub recovery_failed: u64,
    pub gap_missed: u64,
    /// True when `--settle-secs` ran out before every client had every message.
    pub settle_expired: bool,
}

/// What one client saw, times relative to the drain's start.
#[derive(Default)]
struct Followed {
    scheduled_after: Option<Duration>,
    attempt_after: Option<Duration>,
    welcome_after: Option<Duration>,
    returned_to_drained: bool,
    tracker: SeqTracker,
    recovery_failed: u64,
    gap_missed: u64,
}

struct Member {
    client: Client,
    node: String,
    subscription: Subscription,
    events: broadcast::Receiver<Event>,
}

pub async fn run(args: DrainArgs) -> Result<DrainReport> {
    validate(&args)?;
    let admin = Admin::new(
        &args.admin_url,
        args.drain_token.clone(),
        Duration::from_secs(5),
    )?;
    let drained_node = admin
        .node()
        .await
        .context("reading the drained node's /status")?;

    let mut endpoints = vec![args.url.clone()];
    endpoints.extend(args.others.iter().cloned());
    let (members, connect_failures) = connect_all(&args, &endpoints).await;
    let started_elsewhere = members.iter().filter(|m| m.node != drained_node).count();

    let (started_tx, started) = watch::channel(None);
    let (done_tx, done) = watch::channel(None);
    let (stop_tx, stop) = watch::channel(false);
    let drained = Arc::<str>::from(drained_node.as_str());
    let followers: Vec<_> = members
        .into_iter()
        .map(|m| {
            tokio::spawn(follow(
                m,
                drained.clone(),
                started.clone(),
                done.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let clients_connected = followers.len();

    let publisher = start_publisher(&args).await?;
    tokio::time::sleep(Duration::from_secs(args.lead_secs)).await;
    let drain_started = Instant::now();
    started_tx.send_replace(Some(drain_started));
    let trigger = start_drain(&args, &admin).await?;
    let deadline = Duration::from_secs(args.deadline_secs.unwrap_or(args.window_secs + 30));
    let (remaining_per_second, time_to_empty) =
        watch_drained_node(&admin, drain_started, deadline + Duration::from_secs(10)).await;

    let (published, publish_failed, acked) = match publisher {
        Some(task) => {
            let acked = task.await.context("the publisher task")?;
            let published = acked.iter().filter(|ok| **ok).count() as u64;
            (published, acked.len() as u64 - published, acked)
        }
        None => (0, 0, Vec::new()),
    };
    done_tx.send_replace(Some(published));
    let (followed, settle_expired) =
        sequence::settle(followers, Duration::from_secs(args.settle_secs), stop_tx).await;

    Ok(summarize(
        &args,
        Setup {
            drained_node,
            trigger,
            clients_connected,
            connect_failures,
            started_elsewhere,
        },
        Outcome {
            remaining_per_second,
            time_to_empty,
            published,
            publish_failed,
            settle_expired,
        },
        &followed,
        &acked,
    ))
}

fn validate(args: &DrainArgs) -> Result<()> {
    if args.clients == 0 || args.connect_concurrency == 0 || args.window_secs == 0 {
        bail!("need at least one client, a connect concurrency of 1 and a window of 1 s");
    }
    if args.others.is_empty() {
        bail!("--others must name at least one node for the clients to move to");
    }
    for url in std::iter::once(&args.url).chain(&args.others) {
        Target::new(url, None)?;
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be 0 or a positive number");
    }
    if total_messages(args) > MAX_MESSAGES {
        bail!("rate x (lead + window + 3 s) must stay under {MAX_MESSAGES} messages");
    }
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if args.clients as u64 + FD_RESERVE > soft {
        bail!(
            "{} clients exceed this process's open-file limit ({soft} minus {FD_RESERVE} reserved)",
            args.clients
        );
    }
    Ok(())
}

fn total_messages(args: &DrainArgs) -> u64 {
    let secs = args.lead_secs as f64 + args.window_secs as f64 + TAIL.as_secs_f64();
    (args.rate * secs).round() as u64
}

/// Connects and subscribes every client; the first endpoint (the node to drain) comes first.
async fn connect_all(args: &DrainArgs, endpoints: &[String]) -> (Vec<Member>, Vec<String>) {
    let mut config = ClientConfig::new(endpoints.iter().cloned())
        .backoff(Duration::from_millis(100), Duration::from_secs(2));
    config.token = args.token.clone();
    let results = futures::stream::iter((0..args.clients).map(|_| {
        let config = config.clone();
        let channel = args.channel.clone();
        async move {
            let client = Client::connect_with(config).await?;
            let events = client.events();
            let node = client.session().map(|s| s.node).unwrap_or_default();
            let subscription = client.subscribe(&channel).await?;
            anyhow::Ok(Member {
                client,
                node,
                subscription,
                events,
            })
        }
    }))
    .buffer_unordered(args.connect_concurrency)
    .collect::<Vec<_>>()
    .await;
    let mut members = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(member) => members.push(member),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    (members, failures)
}

/// Follows one client from before the drain until it has every published message (or `stop`).
async fn follow(
    mut member: Member,
    drained: Arc<str>,
    mut started: watch::Receiver<Option<Instant>>,
    mut done: watch::Receiver<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) -> Followed {
    let mut seen = Followed::default();
    loop {
        let drain_started = *started.borrow();
        let total = *done.borrow();
        if total.is_some_and(|total| seen.tracker.unique >= total) {
            break;
        }
        tokio::select! {
            message = member.subscription.recv() => {
                let Some(message) = message else { break };
                if let Some((seq, _)) = stamp(&message.data) {
                    seen.tracker.record(seq);
                }
            }
            event = member.events.recv() => match event {
                Ok(event) => seen.note(event, drain_started, &drained),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = started.changed() => {}
            _ = done.changed() => {}
            _ = stop.changed() => break,
        }
    }
    // Closing here would let a finished client's close race with others still moving.
    drop(member.client);
    seen
}

impl Followed {
    fn note(&mut self, event: Event, drain_started: Option<Instant>, drained: &str) {
        let since = |extra: Duration| {
            drain_started.map(|at| (Instant::now() + extra).saturating_duration_since(at))
        };
        match event {
            Event::Draining { after, .. } if self.scheduled_after.is_none() => {
                self.scheduled_after = since(after);
            }
            Event::Reconnecting { delay, .. } if self.attempt_after.is_none() => {
                self.attempt_after = since(delay);
            }
            Event::Connected { node, .. } if drain_started.is_some() => {
                if node == drained {
                    self.returned_to_drained = true;
                } else if self.welcome_after.is_none() {
                    self.welcome_after = since(Duration::ZERO);
                }
            }
            Event::RecoveryFailed { .. } => self.recovery_failed += 1,
            Event::Gap { missed, .. } => self.gap_missed += missed,
            _ => {}
        }
    }
}

/// Publishes on the first other node through the lead, the window and a short tail.
async fn start_publisher(args: &DrainArgs) -> Result<Option<tokio::task::JoinHandle<Vec<bool>>>> {
    if args.rate == 0.0 {
        return Ok(None);
    }
    let mut config = ClientConfig::new([args.others[0].clone()]);
    config.token = args.token.clone();
    let publisher = Client::connect_with(config)
        .await
        .context("connecting the publisher")?;
    let (channel, rate, total) = (args.channel.clone(), args.rate, total_messages(args));
    Ok(Some(tokio::spawn(async move {
        sequence::publish(&publisher, &channel, rate, total).await
    })))
}

async fn start_drain(args: &DrainArgs, admin: &Admin) -> Result<&'static str> {
    if let Some(pid) = args.sigterm_pid {
        let pid = i32::try_from(pid).context("--sigterm-pid out of range")?;
        // SAFETY: kill(2) only sends a signal; the pid is the operator's choice.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!(
                "sending SIGTERM to {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        return Ok("sigterm");
    }
    let body = json!({
        "window_seconds": args.window_secs,
        "deadline_seconds": args.deadline_secs.unwrap_or(args.window_secs + 30),
        "reason": "wsfleet-bench drain",
    });
    admin.post("/drain", body).await?;
    Ok("admin_api")
}

/// Reads the drained node's connections every `POLL` until 0 or it stops answering (it exits
/// once empty), for at most `limit`. Returns one reading per second and the time to empty.
async fn watch_drained_node(
    admin: &Admin,
    drain_started: Instant,
    limit: Duration,
) -> (Vec<u64>, Option<f64>) {
    let mut per_second = Vec::new();
    while drain_started.elapsed() < limit {
        let connections = admin.connections().await.unwrap_or(0);
        let second = drain_started.elapsed().as_secs() as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, connections);
        }
        per_second[second] = connections;
        if connections == 0 {
            return (per_second, Some(drain_started.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(POLL).await;
    }
    (per_second, None)
}

/// What was known before the drain.
struct Setup {
    drained_node: String,
    trigger: &'static str,
    clients_connected: usize,
    connect_failures: Vec<String>,
    started_elsewhere: usize,
}

/// What the drain and the publisher produced, before the clients' results are folded in.
struct Outcome {
    remaining_per_second: Vec<u64>,
    time_to_empty: Option<f64>,
    published: u64,
    publish_failed: u64,
    settle_expired: bool,
}

/// Counts of `times` per whole second.
fn per_second(times: impl Iterator<Item = Duration>) -> Vec<u64> {
    let mut counts = Vec::new();
    for t in times {
        let second = t.as_secs() as usize;
        if counts.len() <= second {
            counts.resize(second + 1, 0);
        }
        counts[second] += 1;
    }
    counts
}

fn peak_ratio(counts: &[u64], even_rate: f64) -> f64 {
    let peak = counts.iter().copied().max().unwrap_or(0);
    if even_rate > 0.0 {
        peak as f64 / even_rate
    } else {
        0.0
    }
}

fn summarize(
    args: &DrainArgs,
    setup: Setup,
    outcome: Outcome,
    followed: &[Followed],
    acked: &[bool],
) -> DrainReport {
    // Clients whose first session landed elsewhere (e.g. the drained node was slow to answer
    // during set-up) are not part of the drain.
    let on_drained = setup.clients_connected - setup.started_elsewhere;
    let even_rate = on_drained as f64 / args.window_secs as f64;
    let scheduled_per_second = per_second(followed.iter().filter_map(|f| f.scheduled_after));
    let attempts_per_second = per_second(followed.iter().filter_map(|f| f.attempt_after));
    let welcomes_per_second = per_second(followed.iter().filter_map(|f| f.welcome_after));
    let moved = followed
        .iter()
        .filter(|f| f.welcome_after.is_some())
        .count();
    let losses: Vec<u64> = followed.iter().map(|f| f.tracker.lost(acked)).collect();
    DrainReport {
        scenario: "drain",
        url: args.url.clone(),
        others: args.others.clone(),
        drained_node: setup.drained_node,
        trigger: setup.trigger,
        clients: args.clients,
        clients_connected: setup.clients_connected,
        connect_failures: setup.connect_failures,
        started_elsewhere: setup.started_elsewhere,
        window_secs: args.window_secs,
        even_rate,
        peak_scheduled_ratio: peak_ratio(&scheduled_per_second, even_rate),
        peak_attempts_ratio: peak_ratio(&attempts_per_second, even_rate),
        peak_welcomes_ratio: peak_ratio(&welcomes_per_second, even_rate),
        scheduled_per_second,
        attempts_per_second,
        welcomes_per_second,
        remaining_per_second: outcome.remaining_per_second,
        moved,
        not_moved: on_drained.saturating_sub(moved),
        returned_to_drained: followed.iter().filter(|f| f.returned_to_drained).count(),
        time_to_empty_secs: outcome.time_to_empty,
        last_welcome_secs: followed
            .iter()
            .filter_map(|f| f.welcome_after)
            .max()
            .map(|d| d.as_secs_f64()),
        rate: args.rate,
        published: outcome.published,
        publish_failed: outcome.publish_failed,
        lost: losses.iter().sum(),
        duplicated: followed.iter().map(|f| f.tracker.duplicated).sum(),
        out_of_order: followed.iter().map(|f| f.tracker.out_of_order).sum(),
        clients_with_loss: losses.iter().filter(|l| **l > 0).count(),
        recovery_failed: followed.iter().map(|f| f.recovery_failed).sum(),
        gap_missed: followed.iter().map(|f| f.gap_missed).sum(),
        settle_expired: outcome.settle_expired,
    }
}

pub fn print_human(r: &DrainReport) {
    println!(
        "drain ({}): {} of {} clients on node {:?}, window {} s, even rate {:.1}/s",
        r.trigger, r.clients_connected, r.clients, r.drained_node, r.window_secs, r.even_rate
    );
    for failure in r.connect_failures.iter().take(5) {
        println!("  connect failure: {failure}");
    }
    if r.started_elsewhere > 0 {
        println!(
            "  {} clients started on another node (not part of the drain)",
            r.started_elsewhere
        );
    }
    println!("  second  scheduled  attempts  welcomes  remaining");
    let seconds = r
        .scheduled_per_second
        .len()
        .max(r.attempts_per_second.len())
        .max(r.welcomes_per_second.len())
        .max(r.remaining_per_second.len());
    let at = |v: &[u64], i: usize| v.get(i).map_or("-".to_owned(), u64::to_string);
    for i in 0..seconds {
        println!(
            "  {i:>6}  {:>9}  {:>8}  {:>8}  {:>9}",
            at(&r.scheduled_per_second, i),
            at(&r.attempts_per_second, i),
            at(&r.welcomes_per_second, i),
            at(&r.remaining_per_second, i)
        );
    }
    let secs = |s: Option<f64>| s.map_or("never".to_owned(), |s| format!("{s:.1} s"));
    println!(
        "  peak/even: scheduled {:.2}x, attempts {:.2}x, welcomes {:.2}x; moved {}, not moved {}, back on the drained node {}",
        r.peak_scheduled_ratio,
        r.peak_attempts_ratio,
        r.peak_welcomes_ratio,
        r.moved,
        r.not_moved,
        r.returned_to_drained
    );
    println!(
        "  time to empty {}, last welcome {}",
        secs(r.time_to_empty_secs),
        secs(r.last_welcome_secs)
    );
    let in_flight = if r.settle_expired {
        " (settle time ran out: includes messages still in flight)"
    } else {
        ""
    };
    println!(
        "  published {} at {}/s ({} not acknowledged); lost {}{in_flight} ({} clients with loss), duplicated {}, out of order {}, recoveries failed {}, offset gaps {}",
        r.published,
        r.rate,
        r.publish_failed,
        r.lost,
        r.clients_with_loss,
        r.duplicated,
        r.out_of_order,
        r.recovery_failed,
        r.gap_missed
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_counted_per_whole_second() {
        let times = [0.1, 0.9, 1.0, 3.5].map(Duration::from_secs_f64);
        assert_eq!(per_second(times.into_iter()), vec![2, 1, 0, 1]);
        assert!(per_second(std::iter::empty()).is_empty());
    }

    #[test]
    fn peak_ratio_compares_the_busiest_second_with_the_even_rate() {
        assert_eq!(peak_ratio(&[10, 15, 5], 10.0), 1.5);
        assert_eq!(peak_ratio(&[], 10.0), 0.0);
        assert_eq!(peak_ratio(&[3], 0.0), 0.0);
    }

    #[test]
    fn a_client_records_its_move_relative_to_the_drain() {
        let mut f = Followed::default();
        // Before the drain: a session on the node to drain is not a move.
        let connected = |node: &str| Event::Connected {
            client_id: "c".into(),
            node: node.into(),
        };
        f.note(connected("a"), None, "a");
        assert!(f.welcome_after.is_none() && !f.returned_to_drained);
        let started = Instant::now();
        f.note(
            Event::Draining {
                after: Duration::from_secs(2),
                reason: "test".into(),
            },
            Some(started),
            "a",
        );
        assert!(f.scheduled_after.expect("schedule recorded") >= Duration::from_secs(2));
        f.note(
            Event::Reconnecting {
                delay: Duration::from_secs(2),
                attempt: 0,
            },
            Some(started),
            "a",
        );
        let attempt = f.attempt_after.expect("attempt recorded");
        assert!(attempt >= Duration::from_secs(2), "{attempt:?}");
        f.note(connected("a"), Some(started), "a");
        assert!(f.returned_to_drained);
        f.note(connected("b"), Some(started), "a");
        assert!(f.welcome_after.is_some());
        f.note(
            Event::Gap {
                channel: "x".into(),
                missed: 3,
            },
            Some(started),
            "a",
        );
        assert_eq!(f.gap_missed, 3);
    }
}
