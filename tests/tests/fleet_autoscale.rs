//! Fleet scenario: autoscaling on live connections. Clients beyond the target per node grow
//! the fleet; when they leave, it shrinks by draining — but only after the stabilization
//! window — and the clients that stay lose nothing.

mod fleet;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet::{Fleet, Load, serving};
use kube::ResourceExt;
use serde_json::json;
use wsfleet_tests::redis::RedisServer;

const STABILIZATION_SECONDS: i64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn autoscale_up_with_clients_and_down_after_stabilization() {
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::on_redis(
        &redis.url(),
        json!({
            "autoscaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 3,
                            "targetConnectionsPerNode": 4,
                            "scaleDownStabilizationSeconds": STABILIZATION_SECONDS}
        }),
    )
    .await;
    let up = fleet.until_serving(1).await;
    assert!(up, "one node Ready (minReplicas)");

    // 10 subscribers + 1 publisher over a target of 4 per node: 3 nodes.
    let busy = Load::start(&fleet.service_url(), 10).await;
    let grown = fleet
        .run_until(Duration::from_secs(120), |pods| {
            pods.len() == 3 && pods.iter().all(serving)
        })
        .await;
    assert!(grown, "the fleet grows to 3 nodes: {:?}", fleet.record);

    // Most clients leave; two stay (3 connections with the publisher): 1 node is enough.
    let quiet = Load::start(&fleet.service_url(), 2).await;
    let all: Vec<String> = fleet.pods().await.iter().map(|p| p.name_any()).collect();
    busy.finish(&all).await;
    let left_at = unix_seconds();
    let shrunk = fleet
        .run_until(Duration::from_secs(180), |pods| {
            pods.len() == 1 && pods.iter().all(serving)
        })
        .await;
    assert!(
        shrunk,
        "the fleet shrinks back to 1 node: {:?}",
        fleet.record
    );
    let status = fleet.fleet().await.status.expect("status");
    let scaled_at = status.last_scale_time.expect("lastScaleTime").0.as_second();
    assert!(
        scaled_at >= left_at + STABILIZATION_SECONDS - 1,
        "scaled down at {scaled_at}, clients left at {left_at}: before the stabilization window"
    );
    let survivor = fleet.pods().await[0].name_any();
    let published = quiet.finish(&[survivor]).await;

    let record = &fleet.record;
    eprintln!("published {published} messages; {record:?}");
    assert!(
        record.max_draining <= 1,
        "never more than maxUnavailable draining: {record:?}"
    );
    assert!(
        record.deleted_undrained.is_empty(),
        "pods deleted before their drain: {record:?}"
    );
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
