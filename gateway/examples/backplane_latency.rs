//! Measures publish→delivery latency through the Redis backplane: node `a` publishes at a
//! steady rate, node `b` (subscribed) timestamps each delivery. Prints p50/p99/max of the
//! publish call (the atomic history+publish script) and of end-to-end delivery.
//!
//! cargo run --release -p wsfleet-gateway --example backplane_latency -- \
//!     [--messages 5000] [--rate 500] [--cluster]
//!
//! Starts its own redis-server (or a 3-master cluster with `--cluster`) on loopback.

use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use wsfleet_gateway::backplane::{Backplane, BackplaneConfig, Delivery, RedisMode};
use wsfleet_tests::redis::{RedisCluster, RedisServer};

struct Args {
    messages: usize,
    rate: u32,
    cluster: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        messages: 5000,
        rate: 500,
        cluster: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = || iter.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => args.messages = value()?.parse().map_err(|e| format!("{e}"))?,
            "--rate" => args.rate = value()?.parse().map_err(|e| format!("{e}"))?,
            "--cluster" => args.cluster = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.messages == 0 || args.rate == 0 {
        return Err("--messages and --rate must be positive".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // Keep the Redis processes alive for the whole run (killed on drop).
    let (_server, _cluster, url, mode) = if args.cluster {
        let cluster = RedisCluster::start()?;
        let url = cluster.urls().join(",");
        (None, Some(cluster), url, RedisMode::Cluster)
    } else {
        let server = RedisServer::start()?;
        let url = server.url();
        (Some(server), None, url, RedisMode::Standalone)
    };

    let (a, _a_deliveries) = Backplane::connect(BackplaneConfig::new(&url, mode, "bench", "a"))?;
    let (b, mut b_deliveries) = Backplane::connect(BackplaneConfig::new(&url, mode, "bench", "b"))?;
    for node in [&a, &b] {
        if !node.wait_up(Duration::from_secs(30)).await {
            return Err(format!("backplane {} did not come up", node.node_id()).into());
        }
    }
    b.subscribe_channel("latency").await?;

    let origin = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(args.messages);
        while latencies.len() < args.messages {
            let next = tokio::time::timeout(Duration::from_secs(10), b_deliveries.recv()).await;
            let Ok(Some(Delivery::Channel { data, .. })) = next else {
                break;
            };
            let sent: u64 = serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v["t"].as_u64())
                .unwrap_or(0);
            let now = origin.elapsed().as_nanos() as u64;
            latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
        }
        latencies
    });

    let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate);
    let mut publish_times = Vec::with_capacity(args.messages);
    for _ in 0..args.messages {
        ticks.tick().await;
        let sent = origin.elapsed().as_nanos() as u64;
        let data = RawValue::from_string(format!(r#"{{"t":{sent},"pad":"{}"}}"#, "x".repeat(64)))?;
        let started = Instant::now();
        a.publish("latency", &data).await?;
        publish_times.push(started.elapsed());
    }
    let mut latencies = receiver.await?;

    println!(
        "mode={mode:?} messages={} rate={}/s received={}",
        args.messages,
        args.rate,
        latencies.len()
    );
    report("publish call (script round trip)", &mut publish_times);
    report("publish -> delivery on other node", &mut latencies);
    Ok(())
}

fn report(label: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        println!("{label}: no samples");
        return;
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label}: p50={:?} p99={:?} max={:?}",
        at(0.50),
        at(0.99),
        at(1.0)
    );
}
