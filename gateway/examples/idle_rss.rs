//! Measures gateway memory and CPU per idle connection, by hand:
//!
//! ```text
//! cargo build --release -p wsfleet-gateway --examples
//! target/release/examples/idle_rss [connections] [gateway binary]
//! ```
//!
//! Starts a gateway (default `target/release/wsfleet-gateway`, anonymous, loopback), runs a
//! child copy of this program that opens `connections` idle WebSocket connections (default
//! 15,000; one process holds at most ~19,500 sockets here), and reports the gateway's VmRSS
//! growth and CPU time per connection from /proc.

use futures::StreamExt;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        let url = args.get(2).cloned().unwrap_or_default();
        let count = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0);
        run_clients(&url, count);
        return;
    }
    let count: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(15_000);
    let bin = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "target/release/wsfleet-gateway".to_owned());
    measure(&bin, count);
}

/// Parent: start the gateway, let a child connect, read /proc.
fn measure(bin: &str, count: usize) {
    let cap = (count + 100).to_string();
    let mut gateway = Command::new(bin)
        .args([
            "--anonymous",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--max-connections",
            &cap,
            "--handshakes-per-second",
            "1000000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the gateway");
    let pid = gateway.id();
    let mut lines = BufReader::new(gateway.stdout.take().expect("piped stdout")).lines();
    let line = loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("wsfleet-gateway listening") => break line,
            Some(Ok(_)) => continue,
            _ => panic!("gateway exited before listening"),
        }
    };
    let ws = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ws="))
        .expect("ws address")
        .to_owned();
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = vm_rss_kib(pid);
    let cpu_before = cpu_ticks(pid);

    let started = Instant::now();
    let me = std::env::current_exe().expect("own path");
    let mut clients = Command::new(me)
        .args(["--client", &format!("ws://{ws}/ws"), &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the client process");
    let mut client_out = BufReader::new(clients.stdout.take().expect("piped stdout")).lines();
    let opened: usize = client_out
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.strip_prefix("opened ").and_then(|n| n.parse().ok()))
        .expect("the client process reports how many it opened");
    let connect_secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks(pid);
    // Let allocator caches settle before reading RSS.
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = vm_rss_kib(pid);

    let per_conn_kib = (rss_after - rss_before) as f64 / opened as f64;
    let per_conn_us = |ticks: i64| ticks as f64 / TICKS_PER_SEC * 1e6 / opened as f64;
    let user_us = per_conn_us(cpu_after.0 - cpu_before.0);
    let sys_us = per_conn_us(cpu_after.1 - cpu_before.1);
    println!("connections opened:      {opened} in {connect_secs:.1}s");
    println!("gateway VmRSS before:    {rss_before} KiB");
    println!("gateway VmRSS after:     {rss_after} KiB");
    println!("RSS per idle connection: {per_conn_kib:.2} KiB");
    println!(
        "gateway CPU per accept:  {:.1} us ({user_us:.1} user + {sys_us:.1} sys; 10 ms ticks)",
        user_us + sys_us
    );

    if let Some(mut stdin) = clients.stdin.take() {
        let _ = stdin.write_all(b"done\n");
    }
    let _ = clients.wait();
    let _ = gateway.kill();
    let _ = gateway.wait();
}

/// Child: open `count` connections, read each welcome, report, hold until stdin closes.
fn run_clients(url: &str, count: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let mut held = Vec::with_capacity(count);
        let mut pending = futures::stream::iter(0..count)
            .map(|_| tokio_tungstenite::connect_async_with_config(url, Some(config), true))
            .buffer_unordered(64);
        while let Some(result) = pending.next().await {
            match result {
                Ok((mut ws, _)) => {
                    let _welcome = ws.next().await;
                    held.push(ws);
                }
                Err(err) => eprintln!("connect failed: {err}"),
            }
        }
        println!("opened {}", held.len());
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
        drop(held);
    });
}

fn vm_rss_kib(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// USER_HZ on Linux: the unit of utime and stime in /proc/PID/stat.
const TICKS_PER_SEC: f64 = 100.0;

/// (utime, stime) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> (i64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are the 14th and 15th overall.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    (get(11), get(12))
}
