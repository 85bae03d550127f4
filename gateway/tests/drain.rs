//! Drains end to end: real gateway processes, real WebSocket clients, real signals. The admin
//! API (`POST`/`DELETE /drain`), refusals while draining, the reconnect hint and 1012 close
//! every client gets, SIGTERM, the deadline, and the smoothness of the schedule clients see.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsfleet_tests::{Gateway, wait_until};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const BIN: &str = env!("CARGO_BIN_EXE_wsfleet-gateway");
const TOKEN: &str = "drain-token";
const PUBLISH_TOKEN: &str = "publish-token";
/// Generous: the machine may be loaded by parallel builds.
const WAIT: Duration = Duration::from_secs(30);

fn gateway(extra: &[&str]) -> Gateway {
    let mut args = vec!["--anonymous", "--node-id", "drain-node"];
    args.extend_from_slice(extra);
    Gateway::start(
        BIN,
        &args,
        &[
            ("WSFLEET_DRAIN_TOKEN", TOKEN),
            ("WSFLEET_PUBLISH_TOKEN", PUBLISH_TOKEN),
        ],
    )
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {body:?}"))
}

fn status(gateway: &Gateway) -> Value {
    json_of(&gateway.admin("GET", "/status", None, "").body)
}

fn post_drain(gateway: &Gateway, window: u64, deadline: u64, reason: &str) -> (u16, Value) {
    let body = json!({"window_seconds": window, "deadline_seconds": deadline, "reason": reason});
    let reply = gateway.admin("POST", "/drain", Some(TOKEN), &body.to_string());
    (reply.status, json_of(&reply.body))
}

async fn connect(url: &str) -> Client {
    let (mut client, _) = connect_async(url).await.expect("upgrade succeeds");
    let welcome = next_frame(&mut client).await;
    assert!(
        matches!(&welcome, Frame::Text(v) if v["op"] == "welcome"),
        "{welcome:?}"
    );
    client
}

/// What a client read next.
#[derive(Debug)]
enum Frame {
    Text(Value),
    Close(Option<CloseCode>, String),
    Ended,
}

async fn next_frame(client: &mut Client) -> Frame {
    let read = async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(text))) => return Frame::Text(json_of(&text)),
                Some(Ok(Message::Close(frame))) => {
                    return Frame::Close(
                        frame.as_ref().map(|f| f.code),
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Ended,
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a frame arrives in time")
}

/// What one client saw of a drain: the hint, when it arrived, and the close.
#[derive(Debug)]
struct Observed {
    after_ms: u64,
    reason: String,
    hinted_at: Instant,
    close: Option<CloseCode>,
    close_reason: String,
    closed_at: Instant,
}

/// Reads a client through a drain: the `reconnect` hint, then the close.
async fn observe_drain(mut client: Client) -> Observed {
    let hint = match next_frame(&mut client).await {
        Frame::Text(v) if v["op"] == "reconnect" => v,
        other => panic!("expected a reconnect hint, got {other:?}"),
    };
    let hinted_at = Instant::now();
    let (close, close_reason) = match next_frame(&mut client).await {
        Frame::Close(code, reason) => (code, reason),
        other => panic!("expected a close after the hint, got {other:?}"),
    };
    Observed {
        after_ms: hint["after_ms"].as_u64().expect("after_ms is a number"),
        reason: hint["reason"].as_str().unwrap_or_default().to_owned(),
        hinted_at,
        close,
        close_reason,
        closed_at: Instant::now(),
    }
}

/// Checks one client's drain: a hint inside the window, then 1012 with the reason about when
/// the hint said (generous: the machine may be loaded).
fn check_observed(seen: &Observed, window_ms: u64, reason: &str) {
    assert!(seen.after_ms < window_ms, "{seen:?}");
    assert_eq!(seen.reason, reason);
    assert_eq!(seen.close, Some(CloseCode::Restart), "{seen:?}");
    assert_eq!(seen.close_reason, reason);
    let took = seen.closed_at.duration_since(seen.hinted_at).as_millis() as i64;
    let late = took - seen.after_ms as i64;
    assert!(
        (-250..=3000).contains(&late),
        "closed {late} ms off its time: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_api_needs_the_token_validates_and_is_idempotent() {
    let gateway = gateway(&[]);
    // One client keeps the node from draining empty (and exiting) at once.
    let _client = connect(&gateway.ws_url("")).await;
    let body = r#"{"window_seconds":60,"deadline_seconds":120,"reason":"test"}"#;
    assert_eq!(gateway.admin("POST", "/drain", None, body).status, 401);
    assert_eq!(
        gateway.admin("POST", "/drain", Some("wrong"), body).status,
        401
    );
    assert_eq!(gateway.admin("DELETE", "/drain", None, "").status, 401);
    for (bad, says) in [
        (
            r#"{"window_seconds":0,"deadline_seconds":10}"#,
            "window_seconds",
        ),
        (
            r#"{"window_seconds":30,"deadline_seconds":10}"#,
            "at least window_seconds",
        ),
        (r#"{"window":30,"deadline_seconds":10}"#, "unknown field"),
        (r#"{"deadline_seconds":10}"#, "window_seconds"),
        ("not json", "invalid body"),
    ] {
        let reply = gateway.admin("POST", "/drain", Some(TOKEN), bad);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        let message = json_of(&reply.body)["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(message.contains(says), "{bad}: {message}");
    }
    assert_eq!(
        status(&gateway)["state"],
        "serving",
        "bad requests change nothing"
    );

    let (code, first) = post_drain(&gateway, 60, 120, "test");
    assert_eq!(
        (code, first["started"].clone()),
        (202, json!(true)),
        "{first}"
    );
    let (code, again) = post_drain(&gateway, 5, 5, "other");
    assert_eq!(
        (code, again["started"].clone()),
        (200, json!(false)),
        "{again}"
    );
    assert_eq!(
        again["drain"]["deadline_unix_ms"],
        first["drain"]["deadline_unix_ms"]
    );
    assert_eq!(again["drain"]["window_seconds"], 60);

    let now = status(&gateway);
    assert_eq!(now["state"], "draining");
    assert_eq!(now["ready"], false);
    assert_eq!(now["drain"]["reason"], "test");
    assert_eq!(now["drain"]["remaining"], 1);
    assert_eq!(gateway.admin("GET", "/readyz", None, "").status, 503);
    assert_eq!(gateway.admin("GET", "/healthz", None, "").status, 200);
    assert_eq!(gateway.metric("wsfleet_draining"), 1.0);
    assert_eq!(gateway.metric("wsfleet_drain_remaining_connections"), 1.0);
    assert!(wait_until(WAIT, || gateway
        .metric("wsfleet_drain_reconnects_sent_total")
        == 1.0));

    let cancelled = gateway.admin("DELETE", "/drain", Some(TOKEN), "");
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let now = status(&gateway);
    assert_eq!(
        (now["state"].clone(), now["drain"].clone()),
        (json!("serving"), Value::Null)
    );
    assert_eq!(gateway.admin("GET", "/readyz", None, "").status, 200);
    assert_eq!(gateway.metric("wsfleet_draining"), 0.0);
    let _another = connect(&gateway.ws_url("")).await;
    // Cancelling again is harmless.
    assert_eq!(
        gateway.admin("DELETE", "/drain", Some(TOKEN), "").status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_refuses_upgrades_with_503_and_retry_after() {
    let gateway = gateway(&[]);
    let _client = connect(&gateway.ws_url("")).await;
    assert_eq!(post_drain(&gateway, 60, 120, "test").0, 202);
    match connect_async(gateway.ws_url("")).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            assert!(retry.is_some_and(|v| v.parse::<u64>().is_ok()), "{retry:?}");
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    assert!(gateway.metric("wsfleet_handshakes_total{result=\"draining\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_in_close_1013_mode_closes_new_upgrades_with_1013() {
    let gateway = gateway(&["--refusal-mode", "close-1013"]);
    let _client = connect(&gateway.ws_url("")).await;
    assert_eq!(post_drain(&gateway, 60, 120, "test").0, 202);
    let (mut late, _) = connect_async(gateway.ws_url(""))
        .await
        .expect("upgrade accepted");
    match next_frame(&mut late).await {
        Frame::Close(Some(CloseCode::Again), reason) => {
            assert!(reason.contains("draining"), "{reason}");
        }
        other => panic!("expected close 1013, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_is_told_to_reconnect_then_closed_with_1012_and_the_node_exits() {
    let mut gateway = gateway(&[]);
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(connect(&gateway.ws_url("")).await);
    }
    let observers: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(observe_drain(c)))
        .collect();
    assert_eq!(post_drain(&gateway, 3, 60, "rolling upgrade").0, 202);
    for observer in observers {
        let seen = observer.await.expect("observer ran");
        check_observed(&seen, 3000, "rolling upgrade");
    }
    let exit = gateway.wait_exit(WAIT).expect("the drained node exits");
    assert!(exit.success(), "{exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_with_the_configured_window_and_exits_zero() {
    let mut gateway = gateway(&["--drain-window-secs", "2", "--drain-timeout-secs", "60"]);
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(connect(&gateway.ws_url("")).await);
    }
    let observers: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(observe_drain(c)))
        .collect();
    gateway.signal("TERM");
    assert!(wait_until(WAIT, || status(&gateway)["state"] == "draining"));
    assert_eq!(gateway.admin("GET", "/readyz", None, "").status, 503);
    assert_eq!(status(&gateway)["drain"]["window_seconds"], 2);
    for observer in observers {
        let seen = observer.await.expect("observer ran");
        check_observed(&seen, 2000, "node shutting down");
    }
    let exit = gateway.wait_exit(WAIT).expect("the drained node exits");
    assert!(exit.success(), "{exit}");
}

#[test]
fn sigterm_on_an_empty_node_exits_zero_at_once() {
    let mut gateway = gateway(&[]);
    gateway.signal("TERM");
    let exit = gateway
        .wait_exit(WAIT)
        .expect("an empty node exits on SIGTERM");
    assert!(exit.success(), "{exit}");
}

/// A client that subscribed and then stopped reading, while large messages fill its socket:
/// its connection task is stuck writing and cannot leave at its time. The deadline ends the
/// drain anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_ends_a_drain_that_a_stuck_client_holds_open() {
    let mut gateway = gateway(&[
        "--slow-consumer-policy",
        "drop-oldest",
        "--heartbeat-interval-secs",
        "300",
    ]);
    let mut stuck = connect(&gateway.ws_url("")).await;
    stuck
        .send(Message::text(
            json!({"op":"subscribe","channel":"flood","id":"s"}).to_string(),
        ))
        .await
        .expect("subscribing");
    assert!(matches!(next_frame(&mut stuck).await, Frame::Text(v) if v["id"] == "s"));
    let big = "x".repeat(60_000);
    let body = json!({"channel": "flood", "data": big}).to_string();
    for _ in 0..400 {
        assert_eq!(
            gateway
                .api("POST", "/api/v1/publish", Some(PUBLISH_TOKEN), &body)
                .status,
            200
        );
    }
    assert_eq!(post_drain(&gateway, 1, 3, "deadline").0, 202);
    // Past the window the stuck client is still there: only the deadline can end the drain.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = status(&gateway);
    assert_eq!(
        (now["state"].clone(), now["drain"]["remaining"].clone()),
        (json!("draining"), json!(1))
    );
    // Its stuck write would hold it for the 600 s heartbeat timeout; the node exits well before.
    let exit = gateway
        .wait_exit(WAIT)
        .expect("the node exits at its deadline");
    assert!(exit.success(), "{exit}");
    drop(stuck);
}

/// The schedule ≥ 1,000 clients observe is smooth: bucketed by the `after_ms` they were
/// given, no second of the window holds more than 1.5× the even rate; and each close landed
/// near its hinted time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_are_spread_evenly_over_the_window() {
    const CLIENTS: usize = 1_000;
    const WINDOW_SECS: u64 = 4;
    let mut gateway = gateway(&["--handshakes-per-second", "100000"]);
    let url = gateway.ws_url("");
    let mut observers = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let client = connect(&url).await;
        observers.push(tokio::spawn(observe_drain(client)));
    }
    assert!(wait_until(WAIT, || gateway.connections() == CLIENTS as u64));
    assert_eq!(post_drain(&gateway, WINDOW_SECS, 60, "smooth").0, 202);
    let mut per_second = [0usize; WINDOW_SECS as usize];
    for observer in observers {
        let seen = observer.await.expect("observer ran");
        check_observed(&seen, WINDOW_SECS * 1000, "smooth");
        per_second[(seen.after_ms / 1000) as usize] += 1;
    }
    let even = CLIENTS as f64 / WINDOW_SECS as f64;
    let peak = per_second.iter().copied().max().unwrap_or(0);
    eprintln!("reconnects per second: {per_second:?} (even rate {even})");
    assert!(
        peak as f64 <= 1.5 * even,
        "peak {peak}/s exceeds 1.5 x {even}/s: {per_second:?}"
    );
    assert_eq!(per_second.iter().sum::<usize>(), CLIENTS);
    let exit = gateway.wait_exit(WAIT).expect("the drained node exits");
    assert!(exit.success(), "{exit}");
}

/// A partial drain (`count`): exactly that many clients are told to move, at times spread over
/// the window, and closed with 1012 then; the others stay; the node keeps serving (ready, new
/// upgrades admitted, `/status` "serving") and does not exit; a repeat while it runs changes
/// nothing, and a full drain still supersedes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_drain_moves_count_clients_and_the_node_keeps_serving() {
    let mut gateway = gateway(&[]);
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(connect(&gateway.ws_url("")).await);
    }
    // Each client reports what it saw within 4 s: a hint and its close, or nothing.
    let observers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let first = tokio::time::timeout(Duration::from_secs(4), next_frame(&mut client));
                match first.await {
                    Ok(Frame::Text(hint)) if hint["op"] == "reconnect" => {
                        let hinted_at = Instant::now();
                        let close = next_frame(&mut client).await;
                        Ok((hint, hinted_at, close, Instant::now()))
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    // Not moved: kept connected.
                    Err(_) => Err(client),
                }
            })
        })
        .collect();
    let body =
        json!({"window_seconds": 2, "deadline_seconds": 2, "count": 15, "reason": "rebalance"});
    let reply = gateway.admin("POST", "/drain", Some(TOKEN), &body.to_string());
    assert_eq!(reply.status, 202, "{}", reply.body);
    let again = gateway.admin("POST", "/drain", Some(TOKEN), &body.to_string());
    assert_eq!(
        again.status, 200,
        "a repeat while it runs starts nothing new"
    );
    assert_eq!(status(&gateway)["state"], "serving");
    assert_eq!(gateway.admin("GET", "/readyz", None, "").status, 200);
    // A newcomer during the partial drain is admitted and not moved.
    let mut newcomer = connect(&gateway.ws_url("")).await;

    let mut moved = 0;
    let mut stayed = Vec::new();
    for observer in observers {
        let (hint, hinted_at, close, closed_at) = match observer.await.expect("observer") {
            Ok(seen) => seen,
            Err(client) => {
                stayed.push(client);
                continue;
            }
        };
        moved += 1;
        let after_ms = hint["after_ms"].as_u64().expect("after_ms");
        assert!(after_ms < 2000, "{hint}");
        assert_eq!(hint["reason"], "rebalance");
        assert!(
            matches!(&close, Frame::Close(Some(CloseCode::Restart), reason) if reason == "rebalance"),
            "{close:?}"
        );
        let late = closed_at.duration_since(hinted_at).as_millis() as i64 - after_ms as i64;
        assert!(
            (-250..=3000).contains(&late),
            "closed {late} ms off its time"
        );
    }
    assert_eq!(
        (moved, stayed.len()),
        (15, 25),
        "exactly count clients were moved"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), next_frame(&mut newcomer))
            .await
            .is_err(),
        "the newcomer was left alone"
    );
    assert!(
        wait_until(WAIT, || status(&gateway)["connections"] == 26),
        "25 stayed, plus the newcomer: {}",
        status(&gateway)
    );
    assert_eq!(status(&gateway)["state"], "serving");
    assert!(
        gateway.wait_exit(Duration::from_millis(500)).is_none(),
        "the node serves on"
    );

    // A full drain afterwards still drains everyone.
    assert_eq!(post_drain(&gateway, 1, 30, "upgrade").0, 202);
    let seen = observe_drain(newcomer).await;
    check_observed(&seen, 1000, "upgrade");
}
