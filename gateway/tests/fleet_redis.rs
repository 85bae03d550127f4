//! A fleet of real gateway processes on one real `redis-server`: channel delivery and direct
//! sends across nodes, resuming from history on another node, and Redis killed and restarted
//! (without persistence) under connected clients.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{Client, WAIT, admin_publish, expected, node, ready, status, wait_ready};
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
