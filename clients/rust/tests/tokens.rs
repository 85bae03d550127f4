//! Token refresh against real gateway processes that require HS256 tokens and close a
//! connection (4001) one second after its token's `exp`: a token callback keeps a session on
//! 3-second tokens alive and subscribed, and when refreshing fails the client comes back after
//! the 4001 with a fresh token from the callback.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use support::Gateway;
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until, timeout};
use wsfleet_client::{Client, ClientConfig, Event, Subscription};

const SECRET: &str = "client-e2e-jwt-secret";
/// Short enough for several refreshes within a test, long enough for a loaded machine.
const LIFETIME_SECS: u64 = 3;
/// The gateway's grace past `exp` before it closes with 4001.
const LEEWAY: &[&str] = &["--jwt-leeway-secs", "1"];
const WAIT: Duration = Duration::from_secs(30);

/// An HS256 token for `sub` that expires `lifetime` seconds from now.
fn token(sub: &str, lifetime: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let claims = json!({"sub": sub, "exp": now.as_secs() + lifetime});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign a token")
}

/// A client on short-lived tokens for `sub` from a callback that counts its calls and fails
/// while `healthy` is false.
async fn renewing_client(
    node: &Gateway,
    calls: &Arc<AtomicUsize>,
    healthy: &Arc<AtomicBool>,
) -> Client {
    let (calls, healthy) = (Arc::clone(calls), Arc::clone(healthy));
    let config = ClientConfig::new([node.url()])
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .token_callback(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let minted = if healthy.load(Ordering::SeqCst) {
                Ok(token("renewer", LIFETIME_SECS))
            } else {
                Err("identity provider unavailable")
            };
            async move { minted }
        });
    Client::connect_with(config)
        .await
        .expect("connect with a token from the callback")
}

async fn next_message(sub: &mut Subscription) -> serde_json::Value {
    timeout(WAIT, sub.recv())
        .await
        .expect("a message within the wait")
        .expect("subscription open")
        .data
}

/// Every event up to and including the first that `wanted` accepts.
async fn events_until(
    events: &mut broadcast::Receiver<Event>,
    wanted: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("events go on");
            let done = wanted(&event);
            seen.push(event);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the expected event within the wait; saw {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_callback_keeps_a_short_lived_session_alive() {
    let node = Gateway::start_jwt("n1", SECRET, LEEWAY);
    let calls = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(AtomicBool::new(true));
    let client = renewing_client(&node, &calls, &healthy).await;
    let started = Instant::now();
    let mut events = client.events();
    let mut sub = client.subscribe("ticks").await.expect("subscribe");
    let publisher = Client::connect(&node.url(), Some(&token("publisher", 600)))
        .await
        .expect("publisher");

    // Past the first token's `exp` plus the leeway: without refreshes this session is gone.
    sleep_until(started + Duration::from_millis(4500)).await;
    publisher
        .publish("ticks", json!("after the first expiry"))
        .await
        .expect("publish");
    assert_eq!(
        next_message(&mut sub).await,
        json!("after the first expiry")
    );
    sleep_until(started + Duration::from_secs(8)).await;
    publisher
        .publish("ticks", json!("at 8 s"))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut sub).await, json!("at 8 s"));

    let mut refreshed = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            Event::TokenRefreshed { .. } => refreshed += 1,
            Event::Disconnected { .. }
            | Event::Connected { .. }
            | Event::TokenRefreshFailed { .. } => panic!("the session should stay: {event:?}"),
            _ => {}
        }
    }
    // A refresh about every 1-1.5 s (half of a 2-3 s lifetime) over 8 s.
    assert!(refreshed >= 4, "only {refreshed} refreshes in 8 s");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        refreshed + 1,
        "one call for the upgrade, one per refresh"
    );
    let session = client.session().expect("still connected");
    assert_eq!(session.client_id, "renewer");
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        session.expires_at_ms.is_some_and(|at| at > unix_ms),
        "the session's expiry follows the refreshes: {session:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_ends_in_4001_then_a_fresh_token_reconnects() {
    let node = Gateway::start_jwt("n1", SECRET, LEEWAY);
    let calls = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(AtomicBool::new(true));
    let client = renewing_client(&node, &calls, &healthy).await;
    let mut events = client.events();
    let mut sub = client.subscribe("alerts").await.expect("subscribe");

    healthy.store(false, Ordering::SeqCst);
    let before_close = events_until(&mut events, |e| {
        matches!(
            e,
            Event::Disconnected {
                code: Some(4001),
                ..
            }
        )
    })
    .await;
    let Some(Event::Disconnected { reason, .. }) = before_close.last() else {
        unreachable!("events_until ends with the wanted event");
    };
    assert!(reason.contains("token expired"), "{reason}");
    let failures: Vec<_> = before_close
        .iter()
        .filter_map(|e| match e {
            Event::TokenRefreshFailed { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .collect();
    assert!(
        failures.len() >= 2,
        "retried before the expiry: {before_close:?}"
    );
    assert_eq!(
        failures.last(),
        Some(&None),
        "the last failure at the expiry stops retrying: {before_close:?}"
    );
    assert!(
        !before_close
            .iter()
            .any(|e| matches!(e, Event::TokenRefreshed { .. })),
        "{before_close:?}"
    );

    let calls_at_close = calls.load(Ordering::SeqCst);
    healthy.store(true, Ordering::SeqCst);
    events_until(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    // The old token has expired: only a fresh one from the callback gets through the upgrade.
    assert!(calls.load(Ordering::SeqCst) > calls_at_close);
    assert_eq!(client.session().expect("reconnected").client_id, "renewer");

    let publisher = Client::connect(&node.url(), Some(&token("publisher", 600)))
        .await
        .expect("publisher");
    publisher
        .publish("alerts", json!("after the reconnect"))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut sub).await, json!("after the reconnect"));
}
