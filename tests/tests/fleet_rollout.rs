//! Fleet scenario: a rolling update of 3 nodes under load. New-revision nodes are surged, old
//! ones drained one at a time and deleted once drained; clients end on new-revision nodes with
//! no message lost.

mod fleet;

use std::time::Duration;

use fleet::{Fleet, Load, revision, serving};
use kube::ResourceExt;
use serde_json::json;
use wsfleet_tests::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_of_three_nodes_under_load() {
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::on_redis(
        &redis.url(),
        json!({"replicas": 3, "drain": {"maxSurge": 1}}),
    )
    .await;
    let up = fleet.until_serving(3).await;
    assert!(up, "three nodes Ready");
    let old = revision(&fleet.pods().await[0]);
    let load = Load::start(&fleet.service_url(), 9).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    fleet
        .patch_spec(json!({"connections": {"maxMessageBytes": 32768}}))
        .await;
    let rolled = fleet
        .run_until(Duration::from_secs(240), |pods| {
            pods.len() == 3 && pods.iter().all(|p| serving(p) && revision(p) != old)
        })
        .await;
    assert!(
        rolled,
        "every node runs the new revision: {:?}",
        fleet.record
    );
    let nodes: Vec<String> = fleet.pods().await.iter().map(|p| p.name_any()).collect();
    let published = load.finish(&nodes).await;

    let record = &fleet.record;
    eprintln!("published {published} messages; {record:?}");
    assert_eq!(
        record.seen.len(),
        6,
        "three old and three new nodes: {record:?}"
    );
    assert!(
        record.max_draining <= 1,
        "never more than maxUnavailable draining: {record:?}"
    );
    assert!(
        record.deleted_undrained.is_empty(),
        "pods deleted before their drain: {record:?}"
    );
}
