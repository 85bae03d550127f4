//! The fleet suite against a local 3-master Redis Cluster (`redis_mode = cluster`, sharded
//! pub/sub): delivery and direct sends across nodes, and resume from history.

mod support;

use support::{node, wait_ready};
use wsfleet_tests::Gateway;
use wsfleet_tests::redis::RedisCluster;

fn fleet(cluster: &RedisCluster, count: usize) -> Vec<Gateway> {
    let seeds = cluster.urls().join(",");
    let nodes: Vec<_> = (0..count)
        .map(|i| node(&format!("c{i}"), &seeds, "cluster", &[]))
        .collect();
    wait_ready(&nodes.iter().collect::<Vec<_>>());
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_fleet_delivers_sends_and_resumes() {
    let cluster = RedisCluster::start().expect("redis cluster starts");
    let nodes = fleet(&cluster, 3);
    // Several channels, so their slots land on different masters.
    for channel in ["room:a", "room:b", "room:c"] {
        support::delivery_across_nodes(&nodes[0], &[&nodes[1], &nodes[2]], channel).await;
    }
    support::direct_across_nodes(&nodes[1], &nodes[2]).await;
    support::resume_after_missed_messages(&nodes[0], &nodes[1], &nodes[2], "resume:cluster").await;
    support::concurrent_resumes(&nodes[2], &nodes[0], "busy:cluster").await;
}
