//! The `idle` scenario: open N WebSocket connections with C concurrent dialers, hold them, and
//! report handshake rate and latency, failures by cause, and what the connections cost the
//! gateway (RSS and CPU from /proc). `--procs P` splits the load over P child processes of
//! this same binary, since one process can hold only ~19,500 sockets here.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::dial::{self, Target};
use crate::latency::{self, Latency, Summary};
use crate::peer::{self, Frame, Protocol};
use crate::procstat;

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Gateway WebSocket URL (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Connections to open (in total, over all processes).
    #[arg(short = 'n', long)]
    pub connections: usize,
    /// Concurrent dialers (in total, over all processes).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// Source addresses to rotate over, e.g. 127.0.0.2-127.0.0.9 (each has ~28k ports).
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Gateway process ids whose RSS and CPU to measure (repeat or comma-separate).
    #[arg(long = "gateway-pid", value_delimiter = ',')]
    pub gateway_pids: Vec<u32>,
    /// Load processes to spread the connections over (≤ ~19,500 sockets each).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Seconds to hold the connections open after the last one is up, before measuring.
    #[arg(long, default_value_t = 3)]
    pub hold_secs: u64,
    /// Per-connection limit for TCP connect + WebSocket handshake.
    #[arg(long, default_value_t = 15)]
    pub handshake_timeout_secs: u64,
    /// Upper bound of the opening phase; dialing stops at this point.
    #[arg(long, default_value_t = 300)]
    pub max_secs: u64,
    /// JWT for gateways that require one.
    #[arg(long)]
    pub token: Option<String>,
    /// The system under test. For the peers, --url is the node's base (ws://127.0.0.1:PORT):
    /// Nchan connections subscribe to channel `bench.idle`, Socket.IO ones connect to the
    /// default namespace (part of the measured handshake).
    #[arg(long, value_enum, default_value_t = Protocol::Wsfleet)]
    pub protocol: Protocol,
    /// Internal: run as a child of `--procs`, report on stdout, hold until stdin closes.
    #[arg(long, hide = true)]
    pub child: bool,
}

/// The result of opening connections in one process (and, merged, in all of them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpenReport {
    pub attempted: u64,
    pub connected: u64,
    pub failures: BTreeMap<String, u64>,
    /// Wall time of the opening phase.
    pub open_secs: f64,
    pub handshake_latency: Summary,
    /// CPU time the load process(es) spent opening the connections.
    #[serde(default)]
    pub load_cpu_us: u64,
    /// Histogram buckets, for merging child reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets: Vec<(u64, u64)>,
}

/// What the held connections cost the gateway processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayCost {
    pub pids: Vec<u32>,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub rss_per_connection_bytes: f64,
    pub cpu_us: u64,
    pub cpu_us_per_accepted: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleReport {
    pub scenario: &'static str,
    pub protocol: Protocol,
    pub url: String,
    pub processes: usize,
    pub concurrency: usize,
    #[serde(flatten)]
    pub open: OpenReport,
    pub handshakes_per_sec: f64,
    /// Connections the gateway closed while they were held.
    pub closed_while_held: Option<u64>,
    pub gateway: Option<GatewayCost>,
}

pub async fn run(args: IdleArgs) -> Result<Option<IdleReport>> {
    let sources = match &args.source_ips {
        Some(spec) => dial::parse_source_ips(spec)?,
        None => Vec::new(),
    };
    let endpoint = args.protocol.endpoint(&args.url, peer::IDLE_CHANNEL);
    let target = Target::new(&endpoint, args.token.clone())?;
    if args.child {
        run_child(&args, &target, &sources).await?;
        return Ok(None);
    }
    if args.procs == 0 || args.connections == 0 || args.concurrency == 0 {
        bail!("-n, -c and --procs must be at least 1");
    }
    check_fd_budget(args.connections.div_ceil(args.procs))?;
    let before = procstat::sample_all(&args.gateway_pids)?;
    let hold = Duration::from_secs(args.hold_secs);
    let (open, closed_while_held, after) = if args.procs == 1 {
        let (open, held) = open_connections(&args, &target, &sources).await;
        tokio::time::sleep(hold).await;
        let after = procstat::sample_all(&args.gateway_pids)?;
        let closed = held.closed.load(Ordering::Relaxed);
        held.release().await;
        (open, Some(closed), after)
    } else {
        let mut children = spawn_children(&args, &sources)?;
        let (open, reports) = match collect_children(&mut children, &args).await {
            Ok(collected) => collected,
            Err(e) => {
                release_children(children, Vec::new()).await;
                return Err(e);
            }
        };
        tokio::time::sleep(hold).await;
        let after = procstat::sample_all(&args.gateway_pids);
        let closed = release_children(children, reports).await;
        (open, closed, after?)
    };
    let gateway = gateway_cost(&args.gateway_pids, &before, &after, open.connected);
    let handshakes_per_sec = if open.open_secs > 0.0 {
        open.connected as f64 / open.open_secs
    } else {
        0.0
    };
    Ok(Some(IdleReport {
        scenario: "idle",
        protocol: args.protocol,
        url: endpoint,
        processes: args.procs,
        concurrency: args.concurrency,
        open,
        handshakes_per_sec,
        closed_while_held,
        gateway,
    }))
}

/// Files a load process needs besides its sockets (stdio, epoll, pipes, the runtime).
const FD_RESERVE: u64 = 200;

/// Refuses a per-process share that cannot fit under the open-file limit, up front, instead of
/// reporting thousands of `too_many_open_files` failures.
pub(crate) fn check_fd_budget(per_process: usize) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and has no other effects.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(());
    }
    let usable = limit.rlim_cur.saturating_sub(FD_RESERVE);
    if per_process as u64 > usable {
        bail!(
            "{per_process} connections per process exceed the open-file limit ({} minus {FD_RESERVE} \
             reserved): raise --procs",
            limit.rlim_cur
        );
    }
    Ok(())
}

fn gateway_cost(
    pids: &[u32],
    before: &[procstat::Sample],
    after: &[procstat::Sample],
    accepted: u64,
) -> Option<GatewayCost> {
    if pids.is_empty() {
        return None;
    }
    let rss_before: u64 = before.iter().map(|s| s.rss_bytes).sum();
    let rss_after: u64 = after.iter().map(|s| s.rss_bytes).sum();
    let cpu_us: u64 = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.cpu_us.saturating_sub(b.cpu_us))
        .sum();
    let per = |total: f64| {
        if accepted > 0 {
            total / accepted as f64
        } else {
            0.0
        }
    };
    Some(GatewayCost {
        pids: pids.to_vec(),
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        rss_per_connection_bytes: per(rss_after as f64 - rss_before as f64),
        cpu_us,
        cpu_us_per_accepted: per(cpu_us as f64),
    })
}

/// Open connections, each read by its own task (answering pings) until released.
struct Held {
    stop: watch::Sender<bool>,
    closed: Arc<AtomicU64>,
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

async fn hold(
    mut ws: dial::Conn,
    protocol: Protocol,
    mut stop: watch::Receiver<bool>,
    closed: Arc<AtomicU64>,
) {
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    // Socket.IO closes connections that do not answer its pings.
                    if let Frame::Reply(answer) = peer::read_frame(protocol, text.as_str())
                        && ws.send(Message::text(answer)).await.is_err()
                    {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// What one dialer did.
#[derive(Default)]
struct DialerResult {
    attempted: u64,
    latency: Latency,
    failures: BTreeMap<String, u64>,
    holders: Vec<tokio::task::JoinHandle<()>>,
}

async fn open_connections(
    args: &IdleArgs,
    target: &Target,
    sources: &[Ipv4Addr],
) -> (OpenReport, Held) {
    let next = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let load_before = procstat::sample(std::process::id()).ok();
    let deadline = started + Duration::from_secs(args.max_secs);
    let timeout = Duration::from_secs(args.handshake_timeout_secs);
    let total = args.connections;
    let protocol = args.protocol;
    let sources: Arc<[Ipv4Addr]> = sources.into();
    let dialers: Vec<_> = (0..args.concurrency.min(total))
        .map(|_| {
            let (next, closed, stop_rx, target, sources) = (
                next.clone(),
                closed.clone(),
                stop_rx.clone(),
                target.clone(),
                sources.clone(),
            );
            tokio::spawn(async move {
                let mut result = DialerResult::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() >= deadline {
                        return result;
                    }
                    result.attempted += 1;
                    let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                    let began = Instant::now();
                    match peer::open(protocol, &target, source, timeout).await {
                        Ok(ws) => {
                            result.latency.record(began.elapsed().as_micros() as u64);
                            result.holders.push(tokio::spawn(hold(
                                ws,
                                protocol,
                                stop_rx.clone(),
                                closed.clone(),
                            )));
                        }
                        Err(e) => *result.failures.entry(dial::classify(&e)).or_default() += 1,
                    }
                }
            })
        })
        .collect();
    let mut report = OpenReport::default();
    let mut latency = Latency::new();
    let mut tasks = Vec::with_capacity(total);
    for dialer in dialers {
        let Ok(result) = dialer.await else {
            *report.failures.entry("dialer_panicked".into()).or_default() += 1;
            continue;
        };
        report.attempted += result.attempted;
        latency.merge(&result.latency);
        for (cause, n) in result.failures {
            *report.failures.entry(cause).or_default() += n;
        }
        tasks.extend(result.holders);
    }
    report.open_secs = started.elapsed().as_secs_f64();
    if let (Some(before), Ok(after)) = (load_before, procstat::sample(std::process::id())) {
        report.load_cpu_us = after.cpu_us.saturating_sub(before.cpu_us);
    }
    report.connected = latency.summary().count;
    report.handshake_latency = latency.summary();
    report.latency_buckets = latency.to_buckets();
    (
        report,
        Held {
            stop,
            closed,
            tasks,
        },
    )
}

/// A child of `--procs`: open its share, print the report as one JSON line, hold the
/// connections until the parent closes our stdin (or an hour passes), then exit.
async fn run_child(args: &IdleArgs, target: &Target, sources: &[Ipv4Addr]) -> Result<()> {
    let (report, held) = open_connections(args, target, sources).await;
    let line = serde_json::to_string(&report)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let wait_stdin = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        // Returns at EOF: the parent is done measuring (or died).
        let _ = std::io::stdin().lock().read_line(&mut sink);
    });
    let _ = tokio::time::timeout(Duration::from_secs(3600), wait_stdin).await;
    let closed = held.closed.load(Ordering::Relaxed);
    held.release().await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::json!({ "closed_while_held": closed })
    )?;
    out.flush()?;
    Ok(())
}

/// This process's share of the connections for child `index`: counts split as evenly as
/// possible; source addresses in disjoint slices when there are enough of them.
fn child_share(
    args: &IdleArgs,
    sources: &[Ipv4Addr],
    index: usize,
) -> (usize, usize, Option<String>) {
    let procs = args.procs;
    let n = args.connections / procs + usize::from(index < args.connections % procs);
    let c = (args.concurrency / procs).max(1);
    let slice = if sources.is_empty() {
        None
    } else if sources.len() >= procs {
        let per = sources.len() / procs;
        let first = sources[index * per];
        let last = if index + 1 == procs {
            sources[sources.len() - 1]
        } else {
            sources[index * per + per - 1]
        };
        Some(format!("{first}-{last}"))
    } else {
        Some(sources[index % sources.len()].to_string())
    };
    (n, c, slice)
}

fn spawn_children(args: &IdleArgs, sources: &[Ipv4Addr]) -> Result<Vec<Child>> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut children = Vec::with_capacity(args.procs);
    for index in 0..args.procs {
        let (n, c, slice) = child_share(args, sources, index);
        let mut command = Command::new(&exe);
        command
            .args(["idle", "--child", "--url", &args.url])
            .args(["-n", &n.to_string(), "-c", &c.to_string()])
            .args(["--protocol", args.protocol.name()])
            .args([
                "--handshake-timeout-secs",
                &args.handshake_timeout_secs.to_string(),
            ])
            .args(["--max-secs", &args.max_secs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(slice) = slice {
            command.args(["--source-ips", &slice]);
        }
        if let Some(token) = &args.token {
            command.args(["--token", token]);
        }
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                for mut child in children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e).context("starting a load child process");
            }
        }
    }
    Ok(children)
}

/// A child's stdout, kept for its closing report.
type ChildReports = Vec<BufReader<ChildStdout>>;

/// Reads each child's report line and merges them.
async fn collect_children(
    children: &mut [Child],
    args: &IdleArgs,
) -> Result<(OpenReport, ChildReports)> {
    let limit = Duration::from_secs(args.max_secs + args.handshake_timeout_secs + 60);
    let mut readers = Vec::new();
    for child in children.iter_mut() {
        let stdout = child.stdout.take().context("child stdout")?;
        readers.push(tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            reader.read_line(&mut line).map(|_| (line, reader))
        }));
    }
    let mut merged = OpenReport::default();
    let mut latency = Latency::new();
    let mut reports = Vec::new();
    for (index, reader) in readers.into_iter().enumerate() {
        let (line, rest) = tokio::time::timeout(limit, reader)
            .await
            .with_context(|| format!("load child {index} did not report within {limit:?}"))?
            .context("reader task")?
            .with_context(|| format!("reading load child {index}"))?;
        let report: OpenReport = serde_json::from_str(line.trim()).with_context(|| {
            format!("load child {index} reported {line:?} (did it fail? see its stderr)")
        })?;
        merged.attempted += report.attempted;
        merged.connected += report.connected;
        merged.open_secs = merged.open_secs.max(report.open_secs);
        merged.load_cpu_us += report.load_cpu_us;
        for (cause, n) in report.failures {
            *merged.failures.entry(cause).or_default() += n;
        }
        latency.merge(&Latency::from_buckets(&report.latency_buckets));
        reports.push(rest);
    }
    merged.handshake_latency = latency.summary();
    Ok((merged, reports))
}

/// Closes the children's stdin (their signal to release and exit), reads how many of their
/// connections the gateway closed while held, and reaps them, killing any that do not exit in
/// time. `None` when a child's closing report is missing.
async fn release_children(mut children: Vec<Child>, reports: ChildReports) -> Option<u64> {
    for child in &mut children {
        drop(child.stdin.take());
    }
    let expected = children.len();
    let read = tokio::task::spawn_blocking(move || {
        let mut closed = 0;
        let mut complete = reports.len() == expected;
        for mut report in reports {
            let mut line = String::new();
            let _ = report.read_line(&mut line);
            let value = serde_json::from_str::<serde_json::Value>(line.trim())
                .ok()
                .and_then(|v| v.get("closed_while_held").and_then(|n| n.as_u64()));
            match value {
                Some(n) => closed += n,
                None => complete = false,
            }
        }
        complete.then_some(closed)
    });
    // A hung child must not hang the run: its report is then missing.
    let closed = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let reap = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    });
    let _ = reap.await;
    closed
}

pub fn print_human(report: &IdleReport) {
    let o = &report.open;
    let l = &o.handshake_latency;
    println!(
        "idle ({}): {} of {} connections open to {} ({} process(es), {} dialers)",
        report.protocol.name(),
        o.connected,
        o.attempted,
        report.url,
        report.processes,
        report.concurrency
    );
    println!(
        "  handshakes: {:.0}/s over {:.2}s; latency p50 {} p99 {} max {}",
        report.handshakes_per_sec,
        o.open_secs,
        latency::human(l.p50_us),
        latency::human(l.p99_us),
        latency::human(l.max_us)
    );
    println!(
        "  load generator: {:.2} CPU s to open them ({:.1} µs per connection)",
        o.load_cpu_us as f64 / 1e6,
        o.load_cpu_us as f64 / o.connected.max(1) as f64
    );
    if o.failures.is_empty() {
        println!("  failures: none");
    } else {
        let causes: Vec<String> = o
            .failures
            .iter()
            .map(|(cause, n)| format!("{cause}={n}"))
            .collect();
        println!("  failures: {}", causes.join(" "));
    }
    if let Some(closed) = report.closed_while_held {
        println!("  closed by the gateway while held: {closed}");
    }
    if let Some(g) = &report.gateway {
        println!(
            "  gateway {:?}: RSS {:.1} MiB -> {:.1} MiB = {:.2} KiB per connection; CPU {:.1} µs per accepted connection",
            g.pids,
            g.rss_before_bytes as f64 / 1048576.0,
            g.rss_after_bytes as f64 / 1048576.0,
            g.rss_per_connection_bytes / 1024.0,
            g.cpu_us_per_accepted
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        idle: IdleArgs,
    }

    #[test]
    fn children_get_disjoint_shares() {
        let args = Cli::parse_from(["x", "-n", "15001", "-c", "64", "--procs", "2"]).idle;
        let sources = dial::parse_source_ips("127.0.0.2-127.0.0.9").unwrap();
        let a = child_share(&args, &sources, 0);
        let b = child_share(&args, &sources, 1);
        assert_eq!(a.0 + b.0, 15001);
        assert_eq!((a.1, b.1), (32, 32));
        assert_eq!(a.2.as_deref(), Some("127.0.0.2-127.0.0.5"));
        assert_eq!(b.2.as_deref(), Some("127.0.0.6-127.0.0.9"));
        let few = dial::parse_source_ips("127.0.0.2").unwrap();
        assert_eq!(child_share(&args, &few, 1).2.as_deref(), Some("127.0.0.2"));
    }

    #[test]
    fn cost_per_connection() {
        let before = [procstat::Sample {
            rss_bytes: 10 << 20,
            cpu_us: 1_000,
        }];
        let after = [procstat::Sample {
            rss_bytes: (10 << 20) + 4096 * 1000,
            cpu_us: 21_000,
        }];
        let cost = gateway_cost(&[1], &before, &after, 1000).unwrap();
        assert_eq!(cost.rss_per_connection_bytes, 4096.0);
        assert_eq!(cost.cpu_us_per_accepted, 20.0);
        assert!(gateway_cost(&[], &[], &[], 10).is_none());
    }
}
