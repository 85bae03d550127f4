//! One load process of the `scale` scenario. It opens its share of raw WebSocket connections
//! (`dial`: bound to its own source addresses, small buffers, no client library state),
//! subscribes each to the broadcast channel and waits for the ack, then holds them, counting
//! every broadcast as it arrives. It talks to its parent in lines: reports as JSON on stdout,
//! commands (`broadcast <seq>`) on stdin; stdin closing means "release and exit".

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::ScaleArgs;
use crate::dial::{self, Conn, Target};
use crate::latency::Latency;
use crate::procstat;
use crate::sequence::{now_us, stamp};

/// Broadcasts one run may send; each connection remembers the ones it saw in a bit mask.
pub const MAX_BROADCASTS: u32 = 16;
/// The request id of every connection's subscribe.
const SUBSCRIBE_ID: &str = "s";
/// How often a child checks whether all its connections have a broadcast.
const POLL: Duration = Duration::from_millis(20);
/// A child outlives a silent parent by at most this long.
const HOLD_LIMIT: Duration = Duration::from_secs(3600);

/// A line a child prints for its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// Every connection of the share was tried: how many are up and subscribed.
    Ready(Opened),
    /// What the child's connections received of one broadcast.
    Seen(Seen),
    /// The parent released the connections.
    Closing(Closing),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Opened {
    pub attempted: u64,
    pub connected: u64,
    pub subscribed: u64,
    pub failures: BTreeMap<String, u64>,
    pub open_secs: f64,
    pub load_cpu_us: u64,
    /// TCP connect + WebSocket upgrade, histogram buckets.
    pub handshake_buckets: Vec<(u64, u64)>,
    /// Subscribe sent → ack received, histogram buckets.
    pub subscribe_buckets: Vec<(u64, u64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Seen {
    pub seq: u32,
    pub received: u64,
    /// Connections that were open when the child stopped waiting.
    pub open: u64,
    pub waited_secs: f64,
    /// Receive time − send time, histogram buckets.
    pub latency_buckets: Vec<(u64, u64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Closing {
    pub closed_while_held: u64,
    pub duplicated: u64,
    /// Frames on our channel that were not one of this run's broadcasts.
    pub foreign: u64,
}

/// What the held connections received, shared by their tasks.
struct Tally {
    channel: String,
    received: Vec<AtomicU64>,
    latency: Vec<Mutex<Latency>>,
    duplicated: AtomicU64,
    foreign: AtomicU64,
    closed: AtomicU64,
}

/// The part of a server frame the child looks at.
#[derive(Deserialize)]
struct Frame {
    op: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

impl Tally {
    fn new(channel: &str, broadcasts: u32) -> Tally {
        Tally {
            channel: channel.to_owned(),
            received: (0..broadcasts).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..broadcasts).map(|_| Mutex::default()).collect(),
            duplicated: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    /// Counts one text frame of a held connection; `seen` is that connection's bit mask.
    fn record(&self, text: &str, seen: &mut u32) {
        let received_at = now_us();
        let Ok(frame) = serde_json::from_str::<Frame>(text) else {
            return;
        };
        if frame.op != "message" || frame.channel.as_deref() != Some(self.channel.as_str()) {
            return;
        }
        // A broadcast's payload is `{"seq": n, "ts_us": <send time>}`.
        let Some((seq, sent_at)) = frame
            .data
            .as_ref()
            .and_then(stamp)
            .filter(|(seq, _)| *seq < self.received.len() as u64)
        else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u32 << seq;
        if *seen & bit != 0 {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *seen |= bit;
        let index = seq as usize;
        if let Ok(mut latency) = self.latency[index].lock() {
            latency.record(received_at.saturating_sub(sent_at));
        }
        self.received[index].fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn run(args: &ScaleArgs) -> Result<()> {
    die_with_parent();
    let targets = args
        .urls
        .iter()
        .map(|url| Target::new(url, args.token.clone()))
        .collect::<Result<Vec<_>>>()?;
    let sources = dial::parse_source_ips(&args.source_ips)?;
    let tally = Arc::new(Tally::new(&args.channel, args.broadcasts));
    let (opened, held) = open(args, &targets, &sources, &tally).await;
    let subscribed = opened.subscribed;
    emit(&Report::Ready(opened))?;

    let mut commands = stdin_lines();
    let limit = Duration::from_secs(args.broadcast_timeout_secs);
    while let Ok(Some(line)) = tokio::time::timeout(HOLD_LIMIT, commands.recv()).await {
        let Some(seq) = parse_command(&line, args.broadcasts) else {
            continue;
        };
        emit(&Report::Seen(
            wait_for(&tally, seq, subscribed, limit).await,
        ))?;
    }
    let closing = Closing {
        closed_while_held: tally.closed.load(Ordering::Relaxed),
        duplicated: tally.duplicated.load(Ordering::Relaxed),
        foreign: tally.foreign.load(Ordering::Relaxed),
    };
    held.release().await;
    emit(&Report::Closing(closing))
}

/// `broadcast <seq>` with a sequence number this run can count.
fn parse_command(line: &str, broadcasts: u32) -> Option<u32> {
    let seq: u32 = line.trim().strip_prefix("broadcast ")?.parse().ok()?;
    (seq < broadcasts).then_some(seq)
}

/// A child must not outlive a parent that was killed: the kernel sends it SIGKILL then.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets this process's parent-death signal.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // The parent may already have gone before the call above (we were re-parented to init).
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        std::process::exit(1);
    }
}

fn emit(report: &Report) -> Result<()> {
    let line = serde_json::to_string(report)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing to the parent")?;
    out.flush().context("writing to the parent")
}

/// Lines from stdin; the channel closes at EOF (the parent is done, or died).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits until every still-open connection has broadcast `seq`, or `limit` passes.
async fn wait_for(tally: &Tally, seq: u32, subscribed: u64, limit: Duration) -> Seen {
    let started = Instant::now();
    let index = seq as usize;
    loop {
        let open = subscribed.saturating_sub(tally.closed.load(Ordering::Relaxed));
        let received = tally.received[index].load(Ordering::Relaxed);
        if received >= open || started.elapsed() >= limit {
            let buckets = match tally.latency[index].lock() {
                Ok(latency) => latency.to_buckets(),
                Err(poisoned) => poisoned.into_inner().to_buckets(),
            };
            return Seen {
                seq,
                received,
                open,
                waited_secs: started.elapsed().as_secs_f64(),
                latency_buckets: buckets,
            };
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The held connections, each read by its own task until released.
struct Held {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Held {
    async fn release(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Reads a held connection (tungstenite answers the gateway's pings while reading) and counts
/// the broadcasts it brings.
async fn hold(mut ws: Conn, tally: Arc<Tally>, mut stop: watch::Receiver<bool>) {
    let mut seen = 0u32;
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => tally.record(&text, &mut seen),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    tally.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Sends the subscribe and reads frames (the welcome first) until its ack, an error, or
/// `timeout`. The error is the failure's cause.
async fn subscribe(ws: &mut Conn, request: &str, timeout: Duration) -> Result<(), String> {
    let exchange = async {
        ws.send(Message::text(request))
            .await
            .map_err(|_| "subscribe_send".to_owned())?;
        while let Some(frame) = ws.next().await {
            let text = match frame {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(_) => return Err("closed_before_ack".to_owned()),
            };
            let Ok(reply) = serde_json::from_str::<Frame>(&text) else {
                return Err("bad_frame".to_owned());
            };
            match reply.op.as_str() {
                "ack" if reply.id.as_deref() == Some(SUBSCRIBE_ID) => return Ok(()),
                "error" => {
                    let code = reply.code.unwrap_or_default();
                    return Err(format!("subscribe_error_{code}"));
                }
                _ => {}
            }
        }
        Err("closed_before_ack".to_owned())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err("subscribe_timeout".to_owned()),
    }
}

/// What one dialer did.
#[derive(Default)]
struct Dialer {
    attempted: u64,
    connected: u64,
    handshake: Latency,
    subscribe: Latency,
    failures: BTreeMap<String, u64>,
    holders: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens and subscribes the share with `args.concurrency` dialers, connection `i` going to
/// gateway `(first + i) % K` from source address `i % sources`, until all were tried or
/// `--max-secs` passes.
async fn open(
    args: &ScaleArgs,
    targets: &[Target],
    sources: &[Ipv4Addr],
    tally: &Arc<Tally>,
) -> (Opened, Held) {
    let started = Instant::now();
    let cpu_before = procstat::sample(std::process::id()).ok();
    let deadline = started + Duration::from_secs(args.max_secs);
    let timeout = Duration::from_secs(args.handshake_timeout_secs);
    let request: Arc<str> = serde_json::json!({
        "op": "subscribe",
        "channel": args.channel,
        "id": SUBSCRIBE_ID,
    })
    .to_string()
    .into();
    let next = Arc::new(AtomicUsize::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let (total, first) = (args.connections, args.first);
    let targets: Arc<[Target]> = targets.into();
    let sources: Arc<[Ipv4Addr]> = sources.into();
    let dialers: Vec<_> = (0..args.concurrency.min(total))
        .map(|_| {
            let (next, targets, sources, request, tally, stop_rx) = (
                next.clone(),
                targets.clone(),
                sources.clone(),
                request.clone(),
                tally.clone(),
                stop_rx.clone(),
            );
            tokio::spawn(async move {
                let mut d = Dialer::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() >= deadline {
                        return d;
                    }
                    d.attempted += 1;
                    let target = &targets[super::layout::gateway_of(first + i, targets.len())];
                    let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                    let began = Instant::now();
                    let mut ws = match dial::dial(target, source, timeout).await {
                        Ok(ws) => ws,
                        Err(e) => {
                            *d.failures.entry(dial::classify(&e)).or_default() += 1;
                            continue;
                        }
                    };
                    d.connected += 1;
                    d.handshake.record(began.elapsed().as_micros() as u64);
                    let asked = Instant::now();
                    match subscribe(&mut ws, &request, timeout).await {
                        Ok(()) => {
                            d.subscribe.record(asked.elapsed().as_micros() as u64);
                            let holder = hold(ws, tally.clone(), stop_rx.clone());
                            d.holders.push(tokio::spawn(holder));
                        }
                        Err(cause) => *d.failures.entry(cause).or_default() += 1,
                    }
                }
            })
        })
        .collect();
    let mut opened = Opened::default();
    let (mut handshake, mut subscribe) = (Latency::new(), Latency::new());
    let mut tasks = Vec::with_capacity(total);
    for dialer in dialers {
        let Ok(d) = dialer.await else {
            *opened.failures.entry("dialer_panicked".into()).or_default() += 1;
            continue;
        };
        opened.attempted += d.attempted;
        opened.connected += d.connected;
        handshake.merge(&d.handshake);
        subscribe.merge(&d.subscribe);
        for (cause, n) in d.failures {
            *opened.failures.entry(cause).or_default() += n;
        }
        tasks.extend(d.holders);
    }
    opened.open_secs = started.elapsed().as_secs_f64();
    opened.subscribed = tasks.len() as u64;
    if let (Some(before), Ok(after)) = (cpu_before, procstat::sample(std::process::id())) {
        opened.load_cpu_us = after.cpu_us.saturating_sub(before.cpu_us);
    }
    opened.handshake_buckets = handshake.to_buckets();
    opened.subscribe_buckets = subscribe.to_buckets();
    (opened, Held { stop, tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, ts: u64) -> String {
        format!(
            r#"{{"op":"message","channel":"bench.scale","offset":{},"data":{{"seq":{seq},"ts_us":{ts}}}}}"#,
            seq + 1
        )
    }

    #[test]
    fn broadcasts_are_counted_once_per_connection() {
        let tally = Tally::new("bench.scale", 3);
        let (mut a, mut b) = (0u32, 0u32);
        let sent = now_us();
        tally.record(&message(0, sent), &mut a);
        tally.record(&message(0, sent), &mut a);
        tally.record(&message(0, sent), &mut b);
        tally.record(&message(2, sent), &mut b);
        assert_eq!(tally.received[0].load(Ordering::Relaxed), 2);
        assert_eq!(tally.received[1].load(Ordering::Relaxed), 0);
        assert_eq!(tally.received[2].load(Ordering::Relaxed), 1);
        assert_eq!(tally.duplicated.load(Ordering::Relaxed), 1);
        assert_eq!(tally.latency[0].lock().unwrap().summary().count, 2);
    }

    #[test]
    fn other_frames_are_not_broadcasts() {
        let tally = Tally::new("bench.scale", 2);
        let mut seen = 0u32;
        // Beyond this run's broadcasts, or without a stamp: foreign.
        tally.record(&message(5, 1), &mut seen);
        tally.record(
            r#"{"op":"message","channel":"bench.scale","offset":1,"data":"hi"}"#,
            &mut seen,
        );
        // Another channel, another op, not JSON: ignored.
        tally.record(&message(0, 1).replace("bench.scale", "other"), &mut seen);
        tally.record(r#"{"op":"ack","id":"s"}"#, &mut seen);
        tally.record("not json", &mut seen);
        assert_eq!(tally.foreign.load(Ordering::Relaxed), 2);
        assert_eq!(seen, 0);
        assert_eq!(tally.received[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command("broadcast 2\n", 3), Some(2));
        assert_eq!(parse_command("broadcast 3", 3), None);
        assert_eq!(parse_command("broadcast x", 3), None);
        assert_eq!(parse_command("stop", 3), None);
    }
}
