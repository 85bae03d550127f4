//! Changing a fleet's size on a real API server:
//!
//! 4. `kubectl scale wsf --replicas` (the scale subresource) down under load: the least
//!    connected nodes go first, each drained before it is deleted, nothing lost;
//! 5. autoscaling on live connection counts: up when clients arrive, and down only after the
//!    scale-down stabilization window, with the clients that stay losing nothing.

mod cluster;

use std::time::Duration;

use cluster::{Cluster, Fleet, Load, serving, wait};
use kube::ResourceExt;
use serde_json::json;
use wsfleet_client::{Client, ClientConfig};
use wsfleet_tests::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_on_a_real_api_server() {
    let cluster = Cluster::start(3).await;
    cluster.install_operator(&[]).await;
    let redis = RedisServer::start().expect("redis-server");
    kubectl_scale_down_takes_least_connected_first(&cluster, &redis.url()).await;
    autoscaling_follows_connections(&cluster, &redis.url()).await;
    cluster.assert_operator_never_forbidden().await;
}

/// `count` idle clients on one node (by its pod address), the Service as their fallback.
async fn idle_clients(node_url: &str, service_url: &str, count: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for _ in 0..count {
        let config = ClientConfig::new(vec![node_url.to_string(), service_url.to_string()])
            .backoff(Duration::from_millis(50), Duration::from_millis(500));
        clients.push(
            Client::connect_with(config)
                .await
                .expect("idle client connects"),
        );
    }
    clients
}

async fn kubectl_scale_down_takes_least_connected_first(cluster: &Cluster, redis_url: &str) {
    let ns = "scale";
    let fleet = Fleet::create(cluster, ns, redis_url, json!({"replicas": 4})).await;
    assert!(
        fleet.until_serving(4, Duration::from_secs(120)).await,
        "four nodes serve:\n{}",
        cluster.operator_logs().await
    );
    let service = fleet.service().await;
    assert!(
        wait(Duration::from_secs(30), || async {
            service.endpoints().len() == 4
        })
        .await
    );
    let load = Load::start(&service.url(), 8).await;

    // Uneven nodes: 0, 3, 6 and 9 extra clients on top of the load's even spread.
    let mut pods = fleet.pods().await;
    pods.sort_by_key(|p| p.name_any());
    let mut extra = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("pod IP");
        let url = format!("ws://{ip}:8080/ws");
        extra.extend(idle_clients(&url, &service.url(), 3 * i).await);
    }
    let by_load: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    // The operator must have seen the uneven counts before it is asked to shrink.
    let seen = wait(Duration::from_secs(60), || async {
        let status = fleet.get().await.status.unwrap_or_default();
        status.connections == 8 + 1 + 18
    })
    .await;
    assert!(
        seen,
        "the fleet counts every connection: {:?}",
        fleet.get().await.status
    );

    let recorder = fleet.record();
    cluster.kubectl(&["scale", "wsf", "chat", "-n", ns, "--replicas=2"]);
    let shrunk = fleet.until_serving(2, Duration::from_secs(120)).await;
    let record = recorder.get();
    assert!(
        shrunk,
        "two nodes left: {record:?}\n{}",
        cluster.operator_logs().await
    );
    assert_eq!(
        record.terminated,
        by_load[..2].to_vec(),
        "the two least connected nodes went, least first"
    );
    assert!(record.deleted_undrained.is_empty(), "{record:?}");
    assert!(record.max_draining <= 1, "{record:?}");
    let nodes = fleet.serving_nodes().await;
    let published = load.finish(&nodes).await;
    eprintln!(
        "kubectl scale 4 → 2: removed {:?}; {published} messages, none lost",
        record.terminated
    );
    drop(extra);
}

async fn autoscaling_follows_connections(cluster: &Cluster, redis_url: &str) {
    let ns = "autoscale";
    let window = 20;
    let fleet = Fleet::create(
        cluster,
        ns,
        redis_url,
        json!({"autoscaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 3,
                               "targetConnectionsPerNode": 10,
                               "scaleDownStabilizationSeconds": window}}),
    )
    .await;
    assert!(
        fleet.until_serving(1, Duration::from_secs(60)).await,
        "one node serves"
    );
    let service = fleet.service().await;
    assert!(
        wait(Duration::from_secs(30), || async {
            service.endpoints().len() == 1
        })
        .await
    );
    let load = Load::start(&service.url(), 5).await;

    // 25 clients in all → three nodes of at most 10.
    let crowd = idle_clients(&service.url(), &service.url(), 19).await;
    let grew = fleet.until_serving(3, Duration::from_secs(90)).await;
    assert!(
        grew,
        "the fleet grew to 3 nodes: {:?}",
        fleet.get().await.status
    );

    // The crowd leaves: the fleet waits out the window, then shrinks to one node.
    let recorder = fleet.record();
    drop(crowd);
    let left = tokio::time::Instant::now();
    let shrunk = fleet
        .until_serving(1, Duration::from_secs(window + 120))
        .await;
    let record = recorder.get();
    assert!(
        shrunk,
        "the fleet shrank to 1 node: {record:?}\n{}",
        cluster.operator_logs().await
    );
    let first_drain = record
        .first_leaving
        .expect("a node left")
        .duration_since(left);
    assert!(
        first_drain >= Duration::from_secs(window),
        "not before the {window}s stabilization window: {first_drain:?}"
    );
    assert!(record.deleted_undrained.is_empty(), "{record:?}");
    let pods = fleet.pods().await;
    assert!(pods.iter().all(serving));
    let nodes = fleet.serving_nodes().await;
    let published = load.finish(&nodes).await;
    eprintln!(
        "autoscaling 1 → 3 → 1: shrank after {first_drain:?}; {published} messages, none lost"
    );
}
