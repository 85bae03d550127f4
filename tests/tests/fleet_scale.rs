//! Fleet scenario: scale 3 → 1 under load. The operator drains the surplus nodes one at a time
//! and deletes each only once drained; real clients follow the reconnect hints to the node
//! that stays and resume their subscription, so no message is lost.

mod fleet;

use std::time::Duration;

use fleet::{Fleet, Load, serving};
use kube::ResourceExt;
use serde_json::json;
use wsfleet_tests::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_three_to_one_under_load() {
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::on_redis(&redis.url(), json!({"replicas": 3})).await;
    let up = fleet.until_serving(3).await;
    assert!(up, "three nodes Ready");
    let load = Load::start(&fleet.service_url(), 12).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    fleet.patch_spec(json!({"replicas": 1})).await;
    let scaled = fleet
        .run_until(Duration::from_secs(180), |pods| {
            pods.len() == 1 && pods.iter().all(serving)
        })
        .await;
    assert!(scaled, "the fleet reaches one node");
    let survivor = fleet.pods().await[0].name_any();
    let published = load.finish(&[survivor]).await;

    let record = &fleet.record;
    eprintln!("published {published} messages; {record:?}");
    assert!(published > 10, "the load ran through the scale-down");
    assert_eq!(record.seen.len(), 3, "no node was replaced: {record:?}");
    assert!(
        record.max_draining <= 1,
        "never more than maxUnavailable draining: {record:?}"
    );
    assert!(
        record.deleted_undrained.is_empty(),
        "pods deleted before their drain: {record:?}"
    );
}
