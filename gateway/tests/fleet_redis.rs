//! A fleet of real gateway processes on one real `redis-server`: channel delivery and direct
//! sends across nodes, resuming from history on another node, and Redis killed and restarted
//! (without persistence) under connected clients.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{
    Client, PUBLISH_TOKEN, WAIT, admin_publish, expected, node, ready, status, wait_ready,
};
use wsfleet_tests::redis::RedisServer;
use wsfleet_tests::wait_until;

fn redis() -> RedisServer {
    RedisServer::start().expect("redis-server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_messages_reach_subscribers_on_every_node() {
    let redis = redis();
    let nodes: Vec<_> = (0..3)
        .map(|i| node(&format!("n{i}"), &redis.url(), "standalone", &[]))
        .collect();
    wait_ready(&nodes.iter().collect::<Vec<_>>());
    let status = status(&nodes[0]);
    assert_eq!(
        (status["backplane"].clone(), status["ready"].clone()),
        (json!("up"), json!(true))
    );
    support::delivery_across_nodes(&nodes[0], &[&nodes[0], &nodes[1], &nodes[2]], "room:fleet")
        .await;
    assert_eq!(nodes[1].metric("wsfleet_backplane_up"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_reach_a_client_on_another_node() {
    let redis = redis();
    let a = node("a", &redis.url(), "standalone", &[]);
    let b = node("b", &redis.url(), "standalone", &[]);
    wait_ready(&[&a, &b]);
    support::direct_across_nodes(&a, &b).await;
    // Each node publishes its presence (connections, cap, state) for the fleet.
    let presence = || {
        redis
            .cli(&["HGET", "wsfleet:presence:b", "state"])
            .unwrap_or_default()
    };
    assert!(
        wait_until(WAIT, || presence().trim() == "serving"),
        "presence of b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_node_replays_missed_messages_once_in_order() {
    let redis = redis();
    let a = node("a", &redis.url(), "standalone", &[]);
    let b = node("b", &redis.url(), "standalone", &[]);
    wait_ready(&[&a, &b]);
    support::resume_after_missed_messages(&a, &b, &a, "resume:x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_without_redis_and_becomes_ready_when_it_appears() {
    let mut redis = redis();
    redis.kill();
    let a = node("a", &redis.url(), "standalone", &[]);
    assert!(!ready(&a), "not ready without Redis");
    assert_eq!(status(&a)["backplane"], "down");
    assert_eq!(a.metric("wsfleet_backplane_up"), 0.0);
    redis.restart().expect("redis-server restarts");
    wait_ready(&[&a]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_clients_and_deliveries_resume() {
    let mut redis = redis();
    let a = node("a", &redis.url(), "standalone", &[]);
    let b = node("b", &redis.url(), "standalone", &[]);
    wait_ready(&[&a, &b]);
    let mut on_a = Client::connect(&a).await;
    let mut on_b = Client::connect(&b).await;
    let ack = on_b.subscribe("outage", None).await;
    assert_eq!(ack["offset"], 0);
    on_a.subscribe("outage", None).await;
    let before = admin_publish(&a, "outage", json!({"seq": 1}));
    let old_epoch = before["epoch"].as_str().unwrap_or_default().to_owned();
    assert_eq!(on_b.messages("outage", 1).await, expected(1, 1, 1));
    assert_eq!(on_a.messages("outage", 1).await, expected(1, 1, 1));

    redis.kill();
    for gateway in [&a, &b] {
        assert!(wait_until(WAIT, || !ready(gateway)), "readyz turns 503");
        assert_eq!(status(gateway)["backplane"], "down");
        assert_eq!(gateway.connections(), 1, "the client stays connected");
    }
    // Publishing while Redis is away is an error, not a hang, and the socket stays.
    let frame = json!({"op": "publish", "channel": "outage", "data": {"seq": 0}});
    let error = on_a.request(frame, "p", &mut Vec::new()).await;
    assert_eq!(
        (error["op"].clone(), error["code"].clone()),
        (json!("error"), json!("internal"))
    );

    redis.restart().expect("redis-server restarts");
    wait_ready(&[&a, &b]);
    assert_eq!(
        a.connections() + b.connections(),
        2,
        "no client was disconnected"
    );
    // Redis lost its data: the channel starts again at offset 1 in a new epoch.
    let after = admin_publish(&a, "outage", json!({"seq": 2}));
    assert_eq!(after["offset"], 1);
    assert_ne!(after["epoch"], old_epoch.as_str());
    assert_eq!(on_b.messages("outage", 1).await, vec![(1, 2)]);
    assert_eq!(on_a.messages("outage", 1).await, vec![(1, 2)]);

    // A client resuming with the lost epoch is told so at once, then gets live messages.
    let mut late = Client::connect(&b).await;
    let ack = late.subscribe("outage", Some((1, &old_epoch))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_eq!(ack["epoch"], after["epoch"], "{ack}");
    admin_publish(&a, "outage", json!({"seq": 3}));
    assert_eq!(late.messages("outage", 1).await, vec![(2, 3)]);
    assert_eq!(on_b.messages("outage", 1).await, vec![(2, 3)]);
    assert!(
        on_b.silent_for(Duration::from_millis(500)).await,
        "no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resumes_during_publishing_are_exactly_once_in_order() {
    let redis = redis();
    let a = node("a", &redis.url(), "standalone", &[]);
    let b = node("b", &redis.url(), "standalone", &[]);
    wait_ready(&[&a, &b]);
    support::concurrent_resumes(&a, &b, "busy").await;
}

/// A publish whose answer is lost to a Redis stall, retried with the same idempotency key,
/// reaches every subscriber exactly once; a publish API call repeated with its key too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_with_its_key_after_a_redis_stall_reaches_every_subscriber_once() {
    let redis = redis();
    let a = node("a", &redis.url(), "standalone", &[]);
    let b = node("b", &redis.url(), "standalone", &[]);
    wait_ready(&[&a, &b]);
    let mut subscribers = Vec::new();
    for node in [&a, &b, &b] {
        let mut subscriber = Client::connect(node).await;
        subscriber.subscribe("orders", None).await;
        subscribers.push(subscriber);
    }
    let mut publisher = Client::connect(&a).await;
    let publish = |seq: u64, id: &str| {
        json!({"op": "publish", "channel": "orders", "data": {"seq": seq},
               "idempotency_key": format!("order-{seq}"), "id": id})
    };

    // Redis stalls: the publish gets no answer within the publisher's patience.
    redis
        .cli(&["CLIENT", "PAUSE", "2500", "WRITE"])
        .expect("pause");
    publisher.send(publish(1, "try-1")).await;
    let answered = tokio::time::timeout(Duration::from_millis(1000), publisher.next()).await;
    assert!(answered.is_err(), "answered during the stall: {answered:?}");

    // The publisher retries with the same key until it gets an ack.
    let mut late = Vec::new();
    let mut ack = json!(null);
    for attempt in 2..40 {
        let id = format!("try-{attempt}");
        ack = publisher.request(publish(1, &id), &id, &mut late).await;
        if ack["op"] == "ack" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(ack["op"], "ack", "the retry is acked: {ack}");
    eprintln!(
        "retry acked: {ack}; the first try's late answer: {:?}",
        late.iter().find(|f| f["id"] == "try-1")
    );
    // The first try's ack, if it came, names the same message.
    for first in late
        .iter()
        .filter(|f| f["id"] == "try-1" && f["op"] == "ack")
    {
        assert_eq!(first["offset"], ack["offset"], "{first} / {ack}");
        assert_eq!(ack["duplicate"], json!(true), "the retry found the first");
    }
    for subscriber in &mut subscribers {
        assert_eq!(subscriber.messages("orders", 1).await[0].1, 1);
        assert!(
            subscriber.silent_for(Duration::from_millis(800)).await,
            "delivered once"
        );
    }

    // The publish API with a key: the repeat answers with the first offset, delivers nothing.
    let body =
        json!({"channel": "orders", "data": {"seq": 2}, "idempotency_key": "order-2"}).to_string();
    let replies: Vec<Value> = (0..2)
        .map(|_| {
            let reply = b.api("POST", "/api/v1/publish", Some(PUBLISH_TOKEN), &body);
            assert_eq!(reply.status, 200, "{}", reply.body);
            serde_json::from_str(&reply.body).expect("JSON")
        })
        .collect();
    assert_eq!(replies[0]["offset"], replies[1]["offset"]);
    assert_eq!(
        (
            replies[0]["duplicate"].clone(),
            replies[1]["duplicate"].clone()
        ),
        (json!(false), json!(true))
    );
    for subscriber in &mut subscribers {
        assert_eq!(subscriber.messages("orders", 1).await[0].1, 2);
        assert!(subscriber.silent_for(Duration::from_millis(500)).await);
    }
    // A new key is a new message.
    let fresh = admin_publish(&a, "orders", json!({"seq": 3}));
    assert!(fresh["offset"].as_u64() > replies[0]["offset"].as_u64());
}
