//! Draining one node of two, end to end: 1,000 clients of the Rust client library
//! (`clients/rust`), which obeys `reconnect` hints and resumes by offset, start on node A;
//! A is drained through the admin API or SIGTERM; every client must end on B, and the
//! reconnect times the clients were given must be spread over the window (no second above
//! 1.5× the even rate). The reconnects as observed (attempts, B's welcomes) are printed; they
//! also carry the machine's scheduling stalls, so they are measured by `wsfleet-bench drain`
//! rather than asserted here.
//! With a shared Redis, a publisher sends at a steady rate throughout and every client must
//! receive every message exactly once, in order.

use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use wsfleet_client::{Client, ClientConfig, Event, Subscription};
use wsfleet_tests::redis::RedisServer;
use wsfleet_tests::{Gateway, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_wsfleet-gateway");
const TOKEN: &str = "fleet-drain-token";
/// Clients and window of the tests; `WSFLEET_DRAIN_CLIENTS` / `WSFLEET_DRAIN_WINDOW_SECS`
/// override them to measure larger drains (e.g. 15,000 over 30 s) with the same checks.
fn scale(default_window_secs: u64) -> (usize, u64) {
    let read = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        read("WSFLEET_DRAIN_CLIENTS", 1_000) as usize,
        read("WSFLEET_DRAIN_WINDOW_SECS", default_window_secs),
    )
}
const CHANNEL: &str = "fleet:drain";
/// Generous: 1,000 clients and two nodes share a possibly loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Trigger {
    AdminApi,
    Sigterm,
}

fn node(id: &str, redis_url: &str, window_secs: u64) -> Gateway {
    let window = window_secs.to_string();
    let mut args = vec![
        "--anonymous",
        "--node-id",
        id,
        "--handshakes-per-second",
        "100000",
        "--drain-window-secs",
        &window,
        "--drain-timeout-secs",
        "120",
    ];
    if !redis_url.is_empty() {
        args.extend(["--redis-url", redis_url]);
    }
    Gateway::start(BIN, &args, &[("WSFLEET_DRAIN_TOKEN", TOKEN)])
}

/// What one client saw, relative to the drain's start: when it was told to reconnect (hint
/// received + its `after`), when it set out to reconnect (the handshake the rest of the fleet
/// has to absorb) and when B welcomed it; and the `seq` of every message it received.
struct Moved {
    /// Kept so the client stays connected until the test has counted node B's connections.
    client: Client,
    scheduled_after: Duration,
    reconnect_after: Duration,
    welcome_after: Duration,
    seqs: Vec<u64>,
}

/// Waits for the drain to start, then for the client's session on node B (within the window
/// plus a margin), then (with `messages`) reads until `messages` messages arrived.
async fn follow(
    client: Client,
    mut events: broadcast::Receiver<Event>,
    mut sub: Option<Subscription>,
    mut started: watch::Receiver<Option<Instant>>,
    window: Duration,
    messages: usize,
) -> Moved {
    // Setting up thousands of clients takes a while on a loaded machine; bounded all the same.
    let drained_at =
        tokio::time::timeout(Duration::from_secs(600), started.wait_for(Option::is_some))
            .await
            .expect("the drain starts")
            .expect("the test holds the sender")
            .unwrap_or_else(Instant::now);
    let on_b = async {
        let (mut scheduled_at, mut attempt_at) = (None, None);
        loop {
            match events.recv().await {
                Ok(Event::Draining { after, .. }) if scheduled_at.is_none() => {
                    scheduled_at = Some(Instant::now() + after);
                }
                // The first reconnect after the drain: the client connects again after `delay`.
                Ok(Event::Reconnecting { delay, .. }) if attempt_at.is_none() => {
                    attempt_at = Some(Instant::now() + delay);
                }
                Ok(Event::Connected { node, .. }) if node == "b" => {
                    let now = Instant::now();
                    let scheduled = scheduled_at.expect("a reconnect hint before the move");
                    return (scheduled, attempt_at.unwrap_or(now), now);
                }
                Ok(Event::RecoveryFailed { channel }) => panic!("recovery failed on {channel}"),
                Ok(Event::Gap { channel, missed }) => panic!("{missed} missed on {channel}"),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("the client stopped"),
            }
        }
    };
    let (scheduled_at, attempt_at, welcomed_at) = tokio::time::timeout(window + WAIT, on_b)
        .await
        .expect("the client reaches node B in time");
    let mut seqs = Vec::with_capacity(messages);
    if let Some(sub) = sub.as_mut() {
        while seqs.len() < messages {
            let message = tokio::time::timeout(WAIT, sub.recv())
                .await
                .expect("messages keep arriving")
                .expect("the subscription stays open");
            seqs.push(message.data["seq"].as_u64().expect("seq is a number"));
        }
    }
    Moved {
        client,
        scheduled_after: scheduled_at.saturating_duration_since(drained_at),
        reconnect_after: attempt_at.saturating_duration_since(drained_at),
        welcome_after: welcomed_at.saturating_duration_since(drained_at),
        seqs,
    }
}

/// One fleet scenario at a time: each holds 1,000 clients and two nodes, and two at once on a
/// 2-core machine would measure the machine rather than the schedule.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the whole scenario; `messages` > 0 needs the Redis engine (shared channels and
/// history across nodes).
async fn drain_one_of_two(trigger: Trigger, messages: usize, default_window_secs: u64) {
    let _one = ONE_AT_A_TIME.lock().await;
    let (clients_n, window_secs) = scale(default_window_secs);
    let redis = (messages > 0).then(|| RedisServer::start().expect("redis-server starts"));
    let redis_url = redis.as_ref().map(RedisServer::url).unwrap_or_default();
    let mut a = node("a", &redis_url, window_secs);
    let b = node("b", &redis_url, window_secs);
    let config = ClientConfig::new([a.ws_url(""), b.ws_url("")])
        .backoff(Duration::from_millis(100), Duration::from_secs(2));

    let (started_tx, started) = watch::channel(None);
    let mut followers = Vec::with_capacity(clients_n);
    for _ in 0..clients_n {
        let client = Client::connect_with(config.clone())
            .await
            .expect("the client connects");
        let session = client.session().expect("a session after connect");
        assert_eq!(session.node, "a", "the first endpoint is node A");
        let sub = if messages > 0 {
            Some(client.subscribe(CHANNEL).await.expect("subscribed"))
        } else {
            None
        };
        let events = client.events();
        followers.push(tokio::spawn(follow(
            client,
            events,
            sub,
            started.clone(),
            Duration::from_secs(window_secs),
            messages,
        )));
    }
    assert!(wait_until(WAIT, || a.connections() == clients_n as u64));

    // The publisher lives on B and sends at a steady rate across the whole drain.
    let publisher = if messages > 0 {
        let client = Client::connect(&b.ws_url(""), None)
            .await
            .expect("publisher connects");
        let period = Duration::from_secs(window_secs + 3) / messages as u32;
        Some(tokio::spawn(async move {
            for seq in 0..messages as u64 {
                client
                    .publish(CHANNEL, json!({ "seq": seq }))
                    .await
                    .expect("publish acked");
                tokio::time::sleep(period).await;
            }
            client
        }))
    } else {
        None
    };

    started_tx.send_replace(Some(Instant::now()));
    match trigger {
        Trigger::AdminApi => {
            let body = json!({"window_seconds": window_secs, "deadline_seconds": 120, "reason": "fleet test"});
            let reply = a.admin("POST", "/drain", Some(TOKEN), &body.to_string());
            assert_eq!(reply.status, 202, "{}", reply.body);
        }
        Trigger::Sigterm => a.signal("TERM"),
    }

    let mut per_second = vec![0usize; window_secs as usize + 30];
    let mut attempts_per_second = per_second.clone();
    let mut welcomes_per_second = per_second.clone();
    let mut clients = Vec::with_capacity(clients_n);
    for follower in followers {
        let moved = follower.await.expect("follower ran");
        let last = per_second.len() - 1;
        per_second[(moved.scheduled_after.as_secs() as usize).min(last)] += 1;
        attempts_per_second[(moved.reconnect_after.as_secs() as usize).min(last)] += 1;
        welcomes_per_second[(moved.welcome_after.as_secs() as usize).min(last)] += 1;
        if messages > 0 {
            let expected: Vec<u64> = (0..messages as u64).collect();
            assert_eq!(moved.seqs, expected, "every message exactly once, in order");
        }
        clients.push(moved.client);
    }
    if let Some(publisher) = publisher {
        publisher.await.expect("publisher ran");
    }
    let exit = a.wait_exit(WAIT).expect("drained node A exits");
    assert!(exit.success(), "{exit}");
    assert!(wait_until(WAIT, || b.connections() >= clients_n as u64));
    assert!(
        clients
            .iter()
            .all(|c| c.session().is_some_and(|s| s.node == "b"))
    );

    for curve in [
        &mut per_second,
        &mut attempts_per_second,
        &mut welcomes_per_second,
    ] {
        while curve.len() > 1 && curve.last() == Some(&0) {
            curve.pop();
        }
    }
    let even = clients_n as f64 / window_secs as f64;
    let peak = per_second.iter().copied().max().unwrap_or(0);
    eprintln!("reconnects scheduled per second: {per_second:?} (even rate {even})");
    eprintln!("reconnect attempts per second: {attempts_per_second:?}");
    eprintln!("welcomes on B per second: {welcomes_per_second:?}");
    assert!(
        peak as f64 <= 1.5 * even,
        "peak {peak}/s exceeds 1.5 x {even}/s: {per_second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_moves_every_client_to_the_other_node_smoothly() {
    drain_one_of_two(Trigger::AdminApi, 0, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_moves_every_client_to_the_other_node_smoothly() {
    drain_one_of_two(Trigger::Sigterm, 0, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_loses_no_message_over_redis() {
    drain_one_of_two(Trigger::AdminApi, 160, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_loses_no_message_over_redis() {
    drain_one_of_two(Trigger::Sigterm, 160, 10).await;
}
