//! End-to-end: the client against real gateway processes (and a real redis-server for the
//! two-node cases). They need the gateway binary; see `support::gateway_bin`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Gateway, Redis};
use tokio::time::timeout;
use wsfleet_client::{Client, ClientConfig, Error, Event, Subscription};

const WAIT: Duration = Duration::from_secs(30);

async fn next_message(sub: &mut Subscription) -> wsfleet_client::Message {
    timeout(WAIT, sub.recv())
        .await
        .expect("a message within the wait")
        .expect("subscription open")
}

/// A message published through a new client on `url` is the next one `sub` receives.
async fn delivery_goes_on(url: &str, channel: &str, sub: &mut Subscription) {
    let publisher = Client::connect(url, None).await.expect("publisher");
    publisher
        .publish(channel, json!("after"))
        .await
        .expect("publish");
    assert_eq!(next_message(sub).await.data, json!("after"));
}

fn fast_backoff(endpoints: Vec<String>) -> ClientConfig {
    ClientConfig::new(endpoints).backoff(Duration::from_millis(50), Duration::from_secs(1))
}

#[tokio::test]
async fn publish_reaches_subscriber_and_acks() {
    let node = Gateway::start("n1", "");
    let subscriber = Client::connect(&node.url(), None)
        .await
        .expect("connect subscriber");
    let publisher = Client::connect(&node.url(), None)
        .await
        .expect("connect publisher");
    assert_eq!(subscriber.session().expect("session").node, "n1");

    let mut sub = subscriber.subscribe("news").await.expect("subscribe");
    let mut acked = Vec::new();
    for i in 0..5 {
        let ack = publisher
            .publish("news", json!({ "i": i }))
            .await
            .expect("publish acked");
        acked.push(ack.offset.expect("publish ack carries the offset"));
    }
    for (i, offset) in acked.into_iter().enumerate() {
        let message = next_message(&mut sub).await;
        assert_eq!(message.data, json!({ "i": i }));
        assert_eq!(
            message.offset, offset,
            "delivered at the offset the publish was acked with"
        );
    }
    assert!(matches!(
        publisher.publish("bad name", json!(1)).await,
        Err(Error::InvalidChannel(_))
    ));
}

#[tokio::test]
async fn direct_send_reaches_the_client_by_id() {
    let node = Gateway::start("n1", "");
    let alice = Client::connect(&node.url(), None).await.expect("connect");
    let bob = Client::connect(&node.url(), None).await.expect("connect");
    let mut inbox = bob.directs().await.expect("first take");
    let bob_id = bob.session().expect("session").client_id;
    alice.send(&bob_id, json!("hi")).await.expect("send acked");
    let direct = timeout(WAIT, inbox.recv())
        .await
        .expect("direct in time")
        .expect("open");
    assert_eq!(direct.data, json!("hi"));
    assert_eq!(direct.from, alice.session().expect("session").client_id);
}

/// A full node refuses the upgrade (503 + Retry-After): the first connect fails with the
/// refusal in its error, and a client that keeps trying gets in once a slot frees up.
#[tokio::test]
async fn full_node_refusal_is_reported_then_retried() {
    let node = Gateway::start_with("n1", "", &["--max-connections", "1"]);
    let holder = Client::connect(&node.url(), None)
        .await
        .expect("first client takes the slot");

    let mut quick = fast_backoff(vec![node.url()]);
    quick.connect_timeout = Duration::from_secs(1);
    match Client::connect_with(quick).await {
        Err(Error::Connect(reason)) => assert!(reason.contains("503"), "{reason}"),
        Err(other) => panic!("expected a refused connect, got {other:?}"),
        Ok(_) => panic!("a second client got past a cap of one"),
    }

    let mut patient = fast_backoff(vec![node.url()]);
    patient.connect_timeout = Duration::from_secs(15);
    let waiting = tokio::spawn(Client::connect_with(patient));
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.close();
    drop(holder);
    let second = timeout(WAIT, waiting)
        .await
        .expect("connect in time")
        .expect("task");
    assert_eq!(
        second
            .expect("connects once the slot is free")
            .session()
            .expect("session")
            .node,
        "n1"
    );
}

/// A node that hangs without closing the socket stops pinging: the client gives up on the
/// connection after two heartbeat intervals and reconnects elsewhere.
#[tokio::test]
async fn silent_node_is_detected_by_missing_heartbeats() {
    let a = Gateway::start_with("a", "", &["--heartbeat-interval-secs", "1"]);
    let b = Gateway::start("b", "");
    let client = Client::connect_with(fast_backoff(vec![a.url(), b.url()]))
        .await
        .expect("client");
    let mut events = client.events();
    a.signal("-STOP");
    // 2 x 1 s + 5 s of slack; the wait allows 30 s.
    wait_for_event(
        &mut events,
        |e| matches!(e, Event::Disconnected { reason, .. } if reason.contains("heartbeat")),
    )
    .await;
    wait_for_event(
        &mut events,
        |e| matches!(e, Event::Connected { node, .. } if node == "b"),
    )
    .await;
    a.signal("-CONT");
}

/// A node restarted in place (in-process engine: its history is gone): the client reconnects
/// on its own, reports that recovery failed, and delivery goes on.
#[tokio::test]
async fn restarted_node_reports_lost_history_and_delivery_resumes() {
    let mut node = Gateway::start("n1", "");
    let (port, admin_port) = (node.port, node.admin_port);
    let client = Client::connect_with(fast_backoff(vec![node.url()]))
        .await
        .expect("client");
    let mut events = client.events();
    let mut sub = client.subscribe("restart").await.expect("subscribe");
    let publisher = Client::connect(&node.url(), None).await.expect("publisher");
    publisher
        .publish("restart", json!("before"))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut sub).await.data, json!("before"));

    node.kill();
    let node = Gateway::start_on("n1", "", port, admin_port);
    wait_for_event(
        &mut events,
        |e| matches!(e, Event::RecoveryFailed { channel } if channel == "restart"),
    )
    .await;
    delivery_goes_on(&node.url(), "restart", &mut sub).await;
}

/// With two endpoints, losing the first moves the client to the second, where its
/// subscription is resumed (reported as not recovered: separate in-process engines share no
/// history) and receives that node's messages.
#[tokio::test]
async fn lost_node_fails_over_to_the_next_endpoint() {
    let mut a = Gateway::start("a", "");
    let b = Gateway::start("b", "");
    let client = Client::connect_with(fast_backoff(vec![a.url(), b.url()]))
        .await
        .expect("client");
    assert_eq!(client.session().expect("session").node, "a");
    let mut events = client.events();
    let mut sub = client.subscribe("failover").await.expect("subscribe");

    a.kill();
    wait_for_event(
        &mut events,
        |e| matches!(e, Event::Connected { node, .. } if node == "b"),
    )
    .await;
    wait_for_event(&mut events, |e| matches!(e, Event::RecoveryFailed { .. })).await;
    let publisher = Client::connect(&b.url(), None).await.expect("publisher");
    publisher
        .publish("failover", json!({"on": "b"}))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut sub).await.data, json!({"on": "b"}));
}

async fn wait_for_event(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    wanted: impl Fn(&Event) -> bool,
) {
    timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return,
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("the expected event within the wait");
}

/// A node whose backplane is down answers a resume with `internal`: the client keeps the
/// subscription, backs off and resumes again (no `SubscriptionLost`), and once Redis is back the
/// resume goes through and reports the history lost with the restart.
#[tokio::test]
async fn a_resume_the_node_cannot_serve_yet_is_retried() {
    let redis = Redis::start();
    let port = redis.port;
    let mut a = Gateway::start("a", &redis.url());
    let b = Gateway::start("b", &redis.url());
    let client = Client::connect_with(fast_backoff(vec![a.url(), b.url()]))
        .await
        .expect("client");
    let mut events = client.events();
    let mut sub = client.subscribe("r").await.expect("subscribe");

    drop(redis);
    a.kill();
    // B is up but has no backplane: the resume is refused for now, more than once.
    for _ in 0..2 {
        wait_for_event(&mut events, |e| {
            matches!(e, Event::Disconnected { reason, .. } if reason.contains("could not resume r"))
        })
        .await;
    }
    let _redis = Redis::start_on(port);
    let mut lost = false;
    timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(Event::RecoveryFailed { channel }) if channel == "r" => return,
                Ok(Event::SubscriptionLost { .. }) => lost = true,
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("the resume goes through once Redis is back");
    assert!(!lost, "a transient refusal must not drop the subscription");

    delivery_goes_on(&b.url(), "r", &mut sub).await;
}

/// Subscribers on node A, A killed while a publisher on node B keeps publishing: every
/// subscriber moves to B and sees every message exactly once, in order.
#[tokio::test]
async fn killed_node_resume_loses_nothing() {
    let redis = Redis::start();
    let mut a = Gateway::start("a", &redis.url());
    let b = Gateway::start("b", &redis.url());
    let publisher = Client::connect(&b.url(), None).await.expect("publisher");
    let mut subs = Vec::new();
    for _ in 0..10 {
        let client = Client::connect_with(fast_backoff(vec![a.url(), b.url()]))
            .await
            .expect("subscriber");
        assert_eq!(client.session().expect("session").node, "a");
        let sub = client.subscribe("ticks").await.expect("subscribe");
        subs.push((client, sub));
    }
    const TOTAL: u64 = 60;
    for seq in 0..TOTAL {
        if seq == 20 {
            a.kill();
        }
        // Publishes while nobody is connected to A still land in B's history.
        publisher
            .publish("ticks", json!({ "seq": seq }))
            .await
            .expect("publish acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (client, sub) in &mut subs {
        for seq in 0..TOTAL {
            let message = next_message(sub).await;
            assert_eq!(
                message.data,
                json!({ "seq": seq }),
                "exactly once, in order"
            );
        }
        assert_eq!(client.session().expect("reconnected").node, "b");
    }
}

/// A drained node's `reconnect` hint moves the client to the other node, and the resumed
/// subscription continues without a gap.
#[tokio::test]
async fn drain_hint_moves_client_without_loss() {
    let redis = Redis::start();
    let a = Gateway::start("a", &redis.url());
    let b = Gateway::start("b", &redis.url());
    let client = Client::connect_with(fast_backoff(vec![a.url(), b.url()]))
        .await
        .expect("client");
    let mut events = client.events();
    let mut sub = client.subscribe("drain").await.expect("subscribe");
    let publisher = Client::connect(&b.url(), None).await.expect("publisher");

    a.drain(2);
    for seq in 0..80u64 {
        publisher
            .publish("drain", json!({ "seq": seq }))
            .await
            .expect("publish acked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for seq in 0..80u64 {
        assert_eq!(next_message(&mut sub).await.data, json!({ "seq": seq }));
    }
    let mut saw_move = false;
    while let Ok(event) = events.try_recv() {
        if matches!(event, Event::Connected { ref node, .. } if node == "b") {
            saw_move = true;
        }
        assert!(
            !matches!(event, Event::RecoveryFailed { .. }),
            "recovery must succeed: {event:?}"
        );
    }
    assert!(saw_move, "client reconnected to node b");
}

/// History lost (Redis restarted without persistence): the resumed subscription is reported
/// as not recovered, and delivery goes on.
#[tokio::test]
async fn lost_history_is_reported() {
    let redis = Redis::start();
    let port = redis.port;
    let mut a = Gateway::start("a", &redis.url());
    let b = Gateway::start("b", &redis.url());
    let client = Client::connect_with(fast_backoff(vec![a.url(), b.url()]))
        .await
        .expect("client");
    let mut events = client.events();
    let mut sub = client.subscribe("h").await.expect("subscribe");
    let publisher = Client::connect(&b.url(), None).await.expect("publisher");
    publisher
        .publish("h", json!("before"))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut sub).await.data, json!("before"));

    drop(redis);
    let _redis = Redis::start_on(port);
    a.kill();
    wait_for_event(
        &mut events,
        |e| matches!(e, Event::RecoveryFailed { channel } if channel == "h"),
    )
    .await;

    // Delivery goes on after the failed recovery (B's backplane reconnects to the new Redis).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the Redis restart"
        );
        if publisher.publish("h", json!("after")).await.is_ok()
            && let Ok(Some(message)) = timeout(Duration::from_secs(1), sub.recv()).await
        {
            assert_eq!(message.data, json!("after"));
            break;
        }
    }
}

/// Redis loses its data while the client stays connected: the channel's offsets restart under
/// a new epoch on the same connection. The client notices the offsets going backwards,
/// resubscribes, reports the failed recovery and delivers the new epoch's messages (instead of
/// dropping them as repeats of offsets it has already seen).
#[tokio::test]
async fn offsets_going_backwards_on_a_live_connection_resync() {
    let redis = Redis::start();
    let port = redis.port;
    let node = Gateway::start("n", &redis.url());
    let client = Client::connect(&node.url(), None).await.expect("client");
    let mut events = client.events();
    let mut sub = client.subscribe("live").await.expect("subscribe");
    let publisher = Client::connect(&node.url(), None).await.expect("publisher");
    for n in 0..3 {
        publisher.publish("live", json!(n)).await.expect("publish");
        assert_eq!(next_message(&mut sub).await.data, json!(n));
    }

    drop(redis);
    let _redis = Redis::start_on(port);
    // Publish until the node is back on the empty Redis and the client has resynced.
    let resynced = timeout(Duration::from_secs(60), async {
        let mut n = 100;
        loop {
            let _ = publisher.publish("live", json!(n)).await;
            n += 1;
            if let Ok(Ok(event)) = timeout(Duration::from_millis(200), events.recv()).await {
                match event {
                    Event::RecoveryFailed { channel } if channel == "live" => return,
                    Event::Connected { .. } | Event::Disconnected { .. } => {
                        panic!("the connection should stay up: {event:?}")
                    }
                    _ => {}
                }
            }
        }
    });
    resynced.await.expect("the client resyncs within a minute");
    publisher
        .publish("live", json!("after"))
        .await
        .expect("publish");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = timeout(deadline - tokio::time::Instant::now(), sub.recv())
            .await
            .expect("the message after the resync")
            .expect("subscription open");
        if message.data == json!("after") {
            break;
        }
    }
}
