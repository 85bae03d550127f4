//! The `scale` scenario: as many concurrent connections as the machine holds, spread over K
//! gateway processes (each on its own loopback address) by P load processes (each from its own
//! slice of source addresses), all subscribed to one channel; then one broadcast (or a few),
//! published through a gateway's admin API, that every connection must receive. Reports what
//! opened and why the rest failed, the broadcast's reach and latency, and what the connections
//! cost: gateway, Redis and load-process RSS, and the kernel's socket memory.

mod admin;
mod child;
mod layout;
mod procs;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;

use admin::Admins;
use procs::Children;

use crate::dial::{self, Target};
use crate::latency::{self, Latency, Summary};
use crate::machine::{self, Sockstat};
use crate::procstat;
use crate::sequence::now_us;

#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Gateway WebSocket URLs (loopback); connection g goes to URL g mod K.
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    /// The gateways' admin base URLs, in the order of --urls: /status is read on each.
    #[arg(long, value_delimiter = ',')]
    pub admin_urls: Vec<String>,
    /// Publish API base URL of the gateway the broadcast is published on.
    #[arg(long)]
    pub api_url: Option<String>,
    /// Publish token for `POST /api/v1/publish`.
    #[arg(long, env = "WSFLEET_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,
    /// Connections to open and subscribe (in total, over all load processes).
    #[arg(short = 'n', long)]
    pub connections: usize,
    /// Concurrent dialers (in total, over all load processes).
    #[arg(short = 'c', long, default_value_t = 256)]
    pub concurrency: usize,
    /// Load processes (each holds ≤ ~19,500 sockets here).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Source addresses, split into disjoint slices over the load processes.
    #[arg(long, default_value = "127.0.1.1-127.0.1.240")]
    pub source_ips: String,
    /// The channel every connection subscribes to.
    #[arg(long, default_value = "bench.scale")]
    pub channel: String,
    /// Broadcasts to send once everything is subscribed.
    #[arg(long, default_value_t = 3)]
    pub broadcasts: u32,
    /// Pause between broadcasts (after the previous one was counted).
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Longest wait for every connection to receive one broadcast.
    #[arg(long, default_value_t = 60)]
    pub broadcast_timeout_secs: u64,
    /// Seconds to hold the connections after the last one is up, before measuring memory.
    #[arg(long, default_value_t = 3)]
    pub hold_secs: u64,
    /// Gateway process ids whose RSS and CPU to measure (comma-separated).
    #[arg(long = "gateway-pid", value_delimiter = ',')]
    pub gateway_pids: Vec<u32>,
    /// The redis-server's process id, to report its RSS.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Per-connection limit for TCP connect + upgrade, and again for subscribe → ack.
    #[arg(long, default_value_t = 30)]
    pub handshake_timeout_secs: u64,
    /// Upper bound of the opening phase; dialing stops at this point.
    #[arg(long, default_value_t = 600)]
    pub max_secs: u64,
    /// JWT for gateways that require one.
    #[arg(long)]
    pub token: Option<String>,
    /// Internal: run as one load process, talking to the parent over stdin/stdout.
    #[arg(long, hide = true)]
    pub child: bool,
    /// Internal: the global number of the child's first connection.
    #[arg(long, hide = true, default_value_t = 0)]
    pub first: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BroadcastResult {
    pub seq: u32,
    pub published: bool,
    pub publish_error: Option<String>,
    /// Time of the `POST /api/v1/publish` round trip.
    pub publish_us: u64,
    /// Connections open when the load processes stopped waiting.
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    /// Receive time − send time (stamped just before the POST), over every connection.
    pub latency: Summary,
    /// Longest wait of a load process for all its connections to have it.
    pub wait_secs: f64,
    /// Gateways' CPU time from the publish until every load process reported.
    pub gateway_cpu_us: Option<u64>,
    /// The load processes' CPU time over the same span (receiving and counting it).
    pub load_cpu_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub gateway_pids: Vec<u32>,
    pub gateway_rss_before_bytes: u64,
    pub gateway_rss_held_bytes: u64,
    pub gateway_rss_per_connection_bytes: f64,
    /// Gateways' CPU time while the connections were opened and subscribed.
    pub gateway_cpu_open_us: u64,
    /// Gateways' CPU time while every connection was held idle for `--hold-secs` (heartbeats
    /// and the client registry's periodic rewrite in Redis).
    pub gateway_cpu_hold_us: u64,
    pub hold_secs: u64,
    pub redis_rss_bytes: Option<u64>,
    /// redis-server's CPU time while the connections were opened and subscribed (the client
    /// registry writes and refreshes, the subscribe position reads).
    pub redis_cpu_open_us: Option<u64>,
    pub load_pids: Vec<u32>,
    pub load_rss_bytes: u64,
    pub load_rss_per_connection_bytes: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub scenario: &'static str,
    pub urls: Vec<String>,
    pub gateways: usize,
    pub processes: usize,
    pub concurrency: usize,
    pub channel: String,
    pub connections: usize,
    pub attempted: u64,
    pub connected: u64,
    pub subscribed: u64,
    pub failures: BTreeMap<String, u64>,
    /// Wall time until the slowest load process had tried its whole share.
    pub open_secs: f64,
    pub subscribed_per_sec: f64,
    pub handshake_latency: Summary,
    pub subscribe_latency: Summary,
    pub load_cpu_us: u64,
    /// Connections each gateway reported in `/status` while all were held.
    pub gateway_connections: Vec<Option<u64>>,
    pub broadcasts: Vec<BroadcastResult>,
    /// Connections that closed while held (`None` when a load process did not say).
    pub closed_while_held: Option<u64>,
    pub duplicated: u64,
    pub foreign: u64,
    pub memory: Memory,
    pub sockstat_before: Option<Sockstat>,
    pub sockstat_held: Option<Sockstat>,
    /// Kernel slab memory before the run and with every connection held.
    pub slab_before_bytes: Option<u64>,
    pub slab_held_bytes: Option<u64>,
    pub loadavg_before: String,
    pub loadavg_held: String,
    pub loadavg_after: String,
    pub elapsed_secs: f64,
}

pub async fn run(args: ScaleArgs) -> Result<Option<ScaleReport>> {
    if args.child {
        child::run(&args).await?;
        return Ok(None);
    }
    let started = Instant::now();
    let admin = validate(&args)?;
    let sources = dial::parse_source_ips(&args.source_ips)?;
    let shares = layout::plan(args.connections, args.procs, args.concurrency, &sources)?;
    check_budgets(&shares)?;
    admin
        .check_capacity(&layout::per_gateway(args.connections, args.urls.len()))
        .await?;

    let sockstat_before = machine::sockstat();
    let slab_before_bytes = machine::slab_bytes();
    let loadavg_before = machine::loadavg();
    let gateways_before = procstat::sample_all(&args.gateway_pids)?;
    let redis_before = args.redis_pid.and_then(|pid| procstat::sample(pid).ok());
    let mut children = Children::spawn(&args, &shares)?;
    let ready_limit = Duration::from_secs(args.max_secs + 2 * args.handshake_timeout_secs + 60);
    let opened = children
        .gather(ready_limit, |r| match r {
            child::Report::Ready(o) => Some(o),
            _ => None,
        })
        .await?;
    let open = merge_opened(opened);
    let gateways_open = procstat::sample_all(&args.gateway_pids)?;

    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let gateways_held = procstat::sample_all(&args.gateway_pids)?;
    let mut memory = memory(
        &args,
        &children.pids(),
        [&gateways_before, &gateways_open, &gateways_held],
        open.subscribed,
    );
    memory.redis_cpu_open_us = match (redis_before, args.redis_pid.map(procstat::sample)) {
        (Some(before), Some(Ok(held))) => Some(held.cpu_us.saturating_sub(before.cpu_us)),
        _ => None,
    };
    let sockstat_held = machine::sockstat();
    let slab_held_bytes = machine::slab_bytes();
    let loadavg_held = machine::loadavg();
    let gateway_connections = admin.connections().await;

    let mut broadcasts = Vec::new();
    for seq in 0..args.broadcasts {
        if seq > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        broadcasts.push(broadcast(&args, &admin, &mut children, seq).await?);
    }
    let closings = children.release().await;
    let closed_while_held =
        (closings.len() == args.procs).then(|| closings.iter().map(|c| c.closed_while_held).sum());
    Ok(Some(ScaleReport {
        scenario: "scale",
        urls: args.urls.clone(),
        gateways: args.urls.len(),
        processes: args.procs,
        concurrency: args.concurrency,
        channel: args.channel.clone(),
        connections: args.connections,
        attempted: open.attempted,
        connected: open.connected,
        subscribed: open.subscribed,
        failures: open.failures,
        open_secs: open.open_secs,
        subscribed_per_sec: rate(open.subscribed, open.open_secs),
        handshake_latency: open.handshake.summary(),
        subscribe_latency: open.subscribe.summary(),
        load_cpu_us: open.load_cpu_us,
        gateway_connections,
        broadcasts,
        closed_while_held,
        duplicated: closings.iter().map(|c| c.duplicated).sum(),
        foreign: closings.iter().map(|c| c.foreign).sum(),
        memory,
        sockstat_before,
        sockstat_held,
        slab_before_bytes,
        slab_held_bytes,
        loadavg_before,
        loadavg_held,
        loadavg_after: machine::loadavg(),
        elapsed_secs: started.elapsed().as_secs_f64(),
    }))
}

fn validate(args: &ScaleArgs) -> Result<Admins> {
    if args.broadcasts == 0 || args.broadcasts > child::MAX_BROADCASTS {
        bail!("--broadcasts must be 1..={}", child::MAX_BROADCASTS);
    }
    for url in &args.urls {
        Target::new(url, None)?;
    }
    if args.admin_urls.len() != args.urls.len() {
        bail!(
            "--admin-urls must name each gateway's admin URL, in the order of --urls ({} given for {} gateways)",
            args.admin_urls.len(),
            args.urls.len()
        );
    }
    let token = args
        .publish_token
        .clone()
        .context("publishing needs --publish-token (or WSFLEET_PUBLISH_TOKEN)")?;
    let api = args
        .api_url
        .as_deref()
        .context("publishing needs --api-url (a gateway's publish API)")?;
    Admins::new(&args.admin_urls, api, token)
}

/// Refuses, up front, shares that cannot fit a process's open-file limit or a source
/// address's ephemeral ports, instead of reporting thousands of failures.
fn check_budgets(shares: &[layout::Share]) -> Result<()> {
    for share in shares {
        crate::idle::check_fd_budget(share.count)?;
    }
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    if let Some(ports) = range.as_deref().and_then(layout::ephemeral_ports) {
        let busiest = shares.iter().map(layout::Share::per_source).max();
        if let Some(busiest) = busiest.filter(|n| *n > ports) {
            bail!(
                "{busiest} connections per source address exceed the {ports} ephemeral ports: widen --source-ips"
            );
        }
    }
    Ok(())
}

/// The children's opening reports, merged.
#[derive(Default)]
struct Open {
    attempted: u64,
    connected: u64,
    subscribed: u64,
    failures: BTreeMap<String, u64>,
    open_secs: f64,
    load_cpu_us: u64,
    handshake: Latency,
    subscribe: Latency,
}

fn merge_opened(opened: Vec<child::Opened>) -> Open {
    let mut open = Open::default();
    for o in opened {
        open.attempted += o.attempted;
        open.connected += o.connected;
        open.subscribed += o.subscribed;
        open.open_secs = open.open_secs.max(o.open_secs);
        open.load_cpu_us += o.load_cpu_us;
        for (cause, n) in o.failures {
            *open.failures.entry(cause).or_default() += n;
        }
        open.handshake
            .merge(&Latency::from_buckets(&o.handshake_buckets));
        open.subscribe
            .merge(&Latency::from_buckets(&o.subscribe_buckets));
    }
    open
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn memory(
    args: &ScaleArgs,
    load_pids: &[u32],
    [before, open, held]: [&[procstat::Sample]; 3],
    subscribed: u64,
) -> Memory {
    let rss = |samples: &[procstat::Sample]| samples.iter().map(|s| s.rss_bytes).sum::<u64>();
    let per = |bytes: f64| {
        if subscribed > 0 {
            bytes / subscribed as f64
        } else {
            0.0
        }
    };
    let load: Vec<procstat::Sample> = load_pids
        .iter()
        .filter_map(|pid| procstat::sample(*pid).ok())
        .collect();
    let (rss_before, rss_held) = (rss(before), rss(held));
    Memory {
        gateway_pids: args.gateway_pids.clone(),
        gateway_rss_before_bytes: rss_before,
        gateway_rss_held_bytes: rss_held,
        gateway_rss_per_connection_bytes: per(rss_held as f64 - rss_before as f64),
        gateway_cpu_open_us: cpu_delta(before, open),
        gateway_cpu_hold_us: cpu_delta(open, held),
        hold_secs: args.hold_secs,
        redis_rss_bytes: args
            .redis_pid
            .and_then(|pid| procstat::sample(pid).ok())
            .map(|s| s.rss_bytes),
        redis_cpu_open_us: None,
        load_pids: load_pids.to_vec(),
        load_rss_bytes: rss(&load),
        load_rss_per_connection_bytes: per(rss(&load) as f64),
    }
}

fn cpu_delta(before: &[procstat::Sample], after: &[procstat::Sample]) -> u64 {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| a.cpu_us.saturating_sub(b.cpu_us))
        .sum()
}

/// One broadcast: the children start waiting for `seq`, the parent publishes it stamped with
/// the send time, and each child reports what its connections received.
async fn broadcast(
    args: &ScaleArgs,
    admin: &Admins,
    children: &mut Children,
    seq: u32,
) -> Result<BroadcastResult> {
    children.tell(&format!("broadcast {seq}"))?;
    let cpu_before = procstat::sample_all(&args.gateway_pids).ok();
    let load_pids = children.pids();
    let load_before = procstat::sample_all(&load_pids).ok();
    let posted = Instant::now();
    let body = json!({
        "channel": args.channel,
        "data": { "seq": seq, "ts_us": now_us() },
    });
    let publish_error = admin.publish(body).await.err().map(|e| format!("{e:#}"));
    let publish_us = posted.elapsed().as_micros() as u64;
    let limit = Duration::from_secs(args.broadcast_timeout_secs + 30);
    let seen = children
        .gather(limit, |r| match r {
            child::Report::Seen(s) if s.seq == seq => Some(s),
            _ => None,
        })
        .await?;
    let gateway_cpu_us = match (cpu_before, procstat::sample_all(&args.gateway_pids).ok()) {
        (Some(before), Some(after)) if !args.gateway_pids.is_empty() => {
            Some(cpu_delta(&before, &after))
        }
        _ => None,
    };
    let load_cpu_us = match (load_before, procstat::sample_all(&load_pids).ok()) {
        (Some(before), Some(after)) => cpu_delta(&before, &after),
        _ => 0,
    };
    let mut latency = Latency::new();
    for s in &seen {
        latency.merge(&Latency::from_buckets(&s.latency_buckets));
    }
    let expected: u64 = seen.iter().map(|s| s.open).sum();
    let received: u64 = seen.iter().map(|s| s.received).sum();
    Ok(BroadcastResult {
        seq,
        published: publish_error.is_none(),
        publish_error,
        publish_us,
        expected,
        received,
        missing: expected.saturating_sub(received),
        latency: latency.summary(),
        wait_secs: seen.iter().map(|s| s.waited_secs).fold(0.0, f64::max),
        gateway_cpu_us,
        load_cpu_us,
    })
}

pub fn print_human(r: &ScaleReport) {
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    println!(
        "scale: {} of {} connections subscribed ({} connected, {} attempted) over {} gateways from {} load processes",
        r.subscribed, r.connections, r.connected, r.attempted, r.gateways, r.processes
    );
    println!(
        "  opened in {:.1}s ({:.0}/s); handshake p50 {} p99 {} max {}; subscribe→ack p50 {} p99 {}",
        r.open_secs,
        r.subscribed_per_sec,
        latency::human(r.handshake_latency.p50_us),
        latency::human(r.handshake_latency.p99_us),
        latency::human(r.handshake_latency.max_us),
        latency::human(r.subscribe_latency.p50_us),
        latency::human(r.subscribe_latency.p99_us),
    );
    if r.failures.is_empty() {
        println!("  failures: none");
    } else {
        let causes: Vec<String> = r.failures.iter().map(|(c, n)| format!("{c}={n}")).collect();
        println!("  failures: {}", causes.join(" "));
    }
    let counts: Vec<String> = r
        .gateway_connections
        .iter()
        .map(|c| c.map_or("?".into(), |n| n.to_string()))
        .collect();
    println!("  gateways' /status connections: {}", counts.join(" "));
    for b in &r.broadcasts {
        let error = b.publish_error.as_deref().unwrap_or("");
        println!(
            "  broadcast {}: received by {} of {} ({} missing); latency p50 {} p90 {} p99 {} max {}; publish {}; CPU gateways {:.2}s, load {:.2}s {error}",
            b.seq,
            b.received,
            b.expected,
            b.missing,
            latency::human(b.latency.p50_us),
            latency::human(b.latency.p90_us),
            latency::human(b.latency.p99_us),
            latency::human(b.latency.max_us),
            latency::human(b.publish_us),
            b.gateway_cpu_us.unwrap_or(0) as f64 / 1e6,
            b.load_cpu_us as f64 / 1e6,
        );
    }
    let m = &r.memory;
    println!(
        "  gateways RSS {:.0} MiB -> {:.0} MiB = {:.2} KiB per connection; CPU {:.1}s to accept and subscribe, {:.2}s while holding for {}s",
        mib(m.gateway_rss_before_bytes),
        mib(m.gateway_rss_held_bytes),
        m.gateway_rss_per_connection_bytes / 1024.0,
        m.gateway_cpu_open_us as f64 / 1e6,
        m.gateway_cpu_hold_us as f64 / 1e6,
        m.hold_secs
    );
    println!(
        "  redis-server RSS {}, CPU {:.1}s while opening; load processes RSS {:.0} MiB ({:.2} KiB per connection), CPU {:.1}s to open",
        m.redis_rss_bytes
            .map_or("?".into(), |b| format!("{:.1} MiB", mib(b))),
        m.redis_cpu_open_us.unwrap_or(0) as f64 / 1e6,
        mib(m.load_rss_bytes),
        m.load_rss_per_connection_bytes / 1024.0,
        r.load_cpu_us as f64 / 1e6
    );
    if let Some(s) = &r.sockstat_held {
        let slab = match (r.slab_before_bytes, r.slab_held_bytes) {
            (Some(before), Some(held)) => {
                format!("; slab {:.0} MiB -> {:.0} MiB", mib(before), mib(held))
            }
            _ => String::new(),
        };
        println!(
            "  kernel: {} TCP sockets in use, {} allocated, {:.0} MiB TCP buffer memory ({} pages){slab}",
            s.tcp_inuse,
            s.tcp_alloc,
            mib(s.tcp_mem_bytes),
            s.tcp_mem_pages
        );
    }
    println!(
        "  closed while held {}, duplicated {}, foreign {}; load average {} / {} / {}",
        r.closed_while_held.map_or("?".into(), |n| n.to_string()),
        r.duplicated,
        r.foreign,
        r.loadavg_before,
        r.loadavg_held,
        r.loadavg_after
    );
}
