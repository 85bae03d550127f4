//! Fleet scenario: a gateway that stops answering (SIGSTOP). Asked to scale 3 → 2, the operator
//! neither deletes the silent node (it may hold clients) nor drains a healthy node in its
//! place; the node shows as unreachable. Once it answers again (SIGCONT) it is drained and
//! deleted like any other, and no message is lost.

mod fleet;

use std::time::Duration;

use fleet::{Fleet, Load, serving, signal};
use kube::ResourceExt;
use serde_json::json;
use wsfleet_tests::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_gateway_is_not_deleted_blindly() {
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::on_redis(&redis.url(), json!({"replicas": 3})).await;
    let up = fleet.until_serving(3).await;
    assert!(up, "three nodes Ready");
    let load = Load::start(&fleet.service_url(), 9).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The least connected node would be the first to go; stop one of them.
    let silent = fleet.pods().await[0].name_any();
    let pid = fleet.pid(&silent).expect("silent node's process");
    signal(pid, "-STOP");
    fleet.patch_spec(json!({"replicas": 2})).await;
    for _ in 0..15 {
        fleet.step().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let pods = fleet.pods().await;
    assert_eq!(pods.len(), 3, "nothing deleted while a node is silent");
    assert!(
        pods.iter().any(|p| p.name_any() == silent),
        "the silent node is kept"
    );
    assert!(
        pods.iter()
            .all(|p| !p.labels().contains_key("wsfleet.io/draining")),
        "no healthy node drained in the silent one's place"
    );
    let status = fleet.fleet().await.status.expect("status");
    let node = status
        .nodes
        .iter()
        .find(|n| n.name == silent)
        .expect("node status");
    assert!(node.unreachable.is_some(), "{node:?}");

    signal(pid, "-CONT");
    let scaled = fleet
        .run_until(Duration::from_secs(180), |pods| {
            pods.len() == 2 && pods.iter().all(serving)
        })
        .await;
    assert!(
        scaled,
        "the fleet reaches two nodes once the node answers: {:?}",
        fleet.record
    );
    let nodes: Vec<String> = fleet.pods().await.iter().map(|p| p.name_any()).collect();
    let published = load.finish(&nodes).await;

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
