//! Fan-out check by hand: delivery latency and completeness of one node.
//!
//! ```text
//! cargo build --release -p wsfleet-gateway --examples
//! target/release/examples/fanout [subscribers] [messages] [per_second] [gateway binary]
//! ```
//!
//! Starts a gateway (default `target/release/wsfleet-gateway`), connects `subscribers`
//! (default 100) to one channel, publishes `messages` (default 500) at `per_second` (default
//! 50) from another client, and reports publish → receive latency percentiles and whether every
//! subscriber got every message in order. Client and gateway share the machine's cores, so the
//! numbers include the clients' own scheduling.

use futures::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let subscribers = arg(1, 100) as usize;
    let messages = arg(2, 500);
    let per_second = arg(3, 50).max(1);
    let bin = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "target/release/wsfleet-gateway".to_owned());

    let mut gateway = Command::new(&bin)
        .args([
            "--anonymous",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--handshakes-per-second", "1000000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the gateway");
    let stdout = gateway.stdout.take().expect("piped stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("wsfleet-gateway listening"))
        .expect("gateway listening line");
    let ws = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ws="))
        .expect("ws address")
        .to_owned();
    let url = format!("ws://{ws}/ws");

    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let (mut client, _) = connect_async(url.as_str())
            .await
            .expect("subscriber connects");
        let _welcome = client.next().await;
        let subscribe = r#"{"op":"subscribe","channel":"bench","id":"s"}"#;
        client
            .send(Message::text(subscribe))
            .await
            .expect("subscribe");
        let _ack = client.next().await;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(messages as usize);
            let mut in_order = true;
            let mut last = 0;
            while (latencies.len() as u64) < messages {
                let next = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
                let Ok(Some(Ok(Message::Text(text)))) = next else {
                    break;
                };
                let received = now_us();
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let offset = frame["offset"].as_u64().unwrap_or(0);
                in_order &= offset == last + 1;
                last = offset;
                let sent = frame["data"]["t"].as_u64().unwrap_or(received);
                latencies.push(received.saturating_sub(sent));
            }
            (latencies, in_order)
        }));
    }

    let (mut publisher, _) = connect_async(url.as_str())
        .await
        .expect("publisher connects");
    let _welcome = publisher.next().await;
    let period = Duration::from_micros(1_000_000 / per_second);
    let mut tick = tokio::time::interval(period);
    for _ in 0..messages {
        tick.tick().await;
        let frame = format!(
            r#"{{"op":"publish","channel":"bench","data":{{"t":{}}}}}"#,
            now_us()
        );
        publisher.send(Message::text(frame)).await.expect("publish");
    }

    let mut all = Vec::new();
    let mut complete = 0;
    let mut ordered = 0;
    for task in tasks {
        if let Ok((latencies, in_order)) = task.await {
            complete += usize::from(latencies.len() as u64 == messages);
            ordered += usize::from(in_order);
            all.extend(latencies);
        }
    }
    all.sort_unstable();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)));
    println!("subscribers: {subscribers}, messages: {messages} at {per_second}/s");
    println!("complete: {complete}/{subscribers}, in order: {ordered}/{subscribers}");
    println!(
        "latency us: p50 {:?} p99 {:?} max {:?}",
        pct(0.50),
        pct(0.99),
        all.last()
    );
    let _ = gateway.kill();
    let _ = gateway.wait();
}
