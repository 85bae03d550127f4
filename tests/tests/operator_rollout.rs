//! Rolling upgrades on a real API server, with the operator installed by helm:
//!
//! 3. a new image and a changed config knob under load: never more than `maxUnavailable` nodes
//!    draining nor more than `replicas + maxSurge` pods, every pod drained before it is
//!    deleted, every client ends on a new node with nothing lost;
//! 8. the leading operator replica SIGKILLed (and its pod force-deleted, as when its machine
//!    dies) in the middle of a rollout: another replica takes the Lease and finishes it, and no
//!    node is deleted undrained.
//!
//! `WSFLEET_ROLLOUT_NODES` and `WSFLEET_ROLLOUT_CLIENTS` size scenario 3 (default 3 nodes, 12
//! clients) for a measurement run, e.g. 6 nodes and 3,000 clients.

mod cluster;

use std::time::Duration;

use cluster::{Cluster, Fleet, GATEWAY_IMAGE, Load, OPERATOR_NS, revision, serving, wait};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use wsfleet_tests::redis::RedisServer;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_upgrades_on_a_real_api_server() {
    let cluster = Cluster::start(3).await;
    // A short lease, so the standby takes over within seconds of the leader's death.
    cluster
        .install_operator(&["--set", "leaderElection.leaseDurationSeconds=6"])
        .await;
    let redis = RedisServer::start().expect("redis-server");
    let nodes = env_or("WSFLEET_ROLLOUT_NODES", 3);
    let clients = env_or("WSFLEET_ROLLOUT_CLIENTS", 12);
    let fleet = Fleet::create(
        &cluster,
        "rollout",
        &redis.url(),
        json!({"replicas": nodes, "drain": {"maxSurge": 1, "maxUnavailable": 1},
               "connections": {"handshakesPerSecond": 2000}}),
    )
    .await;
    assert!(
        fleet
            .until_serving(nodes, Duration::from_secs(60 + 20 * nodes as u64))
            .await,
        "{nodes} nodes serve:\n{}",
        cluster.operator_logs().await
    );
    let service = fleet.service().await;
    assert!(
        wait(Duration::from_secs(30), || async {
            service.endpoints().len() == nodes
        })
        .await
    );
    let load = Load::start(&service.url(), clients).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3. A new image and a changed knob: one new revision, rolled node by node.
    let recorder = fleet.record();
    let old = revision(&fleet.pods().await[0]);
    let started = tokio::time::Instant::now();
    fleet
        .patch_spec(json!({
            "image": GATEWAY_IMAGE.replace(":0.1.0", ":0.1.1"),
            "connections": {"maxMessageBytes": 32768},
        }))
        .await;
    let rolled = wait(Duration::from_secs(120 + 40 * nodes as u64), || async {
        let pods = fleet.pods().await;
        pods.len() == nodes && pods.iter().all(|p| serving(p) && revision(p) != old)
    })
    .await;
    let took = started.elapsed();
    assert!(
        rolled,
        "every node runs the new revision: {:?}\n{}",
        recorder.get(),
        cluster.operator_logs().await
    );
    let record = recorder.get();
    let (reconnects, peak) = load.reconnect_peak();
    // Each node's clients spread over its 2 s reconnect window.
    let even = clients as f64 / nodes as f64 / 2.0;
    eprintln!(
        "rollout of {nodes} nodes with {clients} clients took {took:?}; {reconnects} reconnects, \
         peak {peak}/s against an even {even:.0}/s; most pods {}, most draining {}",
        record.max_pods, record.max_draining
    );
    assert!(
        record.max_draining <= 1,
        "never more than maxUnavailable draining: {record:?}"
    );
    assert!(
        record.max_pods <= nodes + 1,
        "never more than replicas + maxSurge pods: {record:?}"
    );
    assert!(
        record.deleted_undrained.is_empty(),
        "pods deleted before their drain: {record:?}"
    );
    assert_eq!(
        record.seen.len(),
        2 * nodes,
        "each old node replaced once: {record:?}"
    );
    let current = fleet.serving_nodes().await;
    let published = load.finish(&current).await;
    eprintln!("rollout: {published} messages, none lost, duplicated or out of order");

    // 8. The leader killed mid-rollout.
    let load = Load::start(&service.url(), clients).await;
    let recorder = fleet.record();
    let leader = cluster.lease_holder().await.expect("a leader");
    let old = revision(&fleet.pods().await[0]);
    fleet
        .patch_spec(json!({"connections": {"maxMessageBytes": 16384}}))
        .await;
    let draining = wait(Duration::from_secs(60), || async {
        recorder.get().max_draining >= 1
    })
    .await;
    assert!(draining, "the rollout began: {:?}", recorder.get());
    // The leader's machine dies: its process is killed and its pod force-deleted (as the
    // node controller would), so it cannot come back under the same identity.
    assert!(
        cluster.kubelet.signal(OPERATOR_NS, &leader, libc::SIGKILL),
        "the leader {leader} has a process"
    );
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    Api::<Pod>::namespaced(cluster.client.clone(), OPERATOR_NS)
        .delete(&leader, &force)
        .await
        .expect("force-deleting the leader's pod");
    let taken = wait(Duration::from_secs(60), || async {
        cluster.lease_holder().await.is_some_and(|h| h != leader)
    })
    .await;
    assert!(taken, "another replica took the Lease from {leader}");
    let rolled = wait(Duration::from_secs(120 + 40 * nodes as u64), || async {
        let pods = fleet.pods().await;
        pods.len() == nodes && pods.iter().all(|p| serving(p) && revision(p) != old)
    })
    .await;
    let record = recorder.get();
    assert!(
        rolled,
        "the new leader finished the rollout: {record:?}\n{}",
        cluster.operator_logs().await
    );
    assert!(
        record.deleted_undrained.is_empty(),
        "no node deleted undrained across the takeover: {record:?}"
    );
    assert!(record.max_draining <= 1, "{record:?}");
    let current = fleet.serving_nodes().await;
    load.finish(&current).await;
    cluster.assert_operator_never_forbidden().await;
}
