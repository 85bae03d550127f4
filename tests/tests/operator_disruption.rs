//! Disruptions Kubernetes starts, on a real API server with the real disruption controller:
//!
//! 6. a machine drain: the Eviction API called for every gateway pod at once, as `kubectl
//!    drain` does (429s retried), with and without autoscaling. At most `maxUnavailable` nodes
//!    are out at any moment, each evicted node drains itself, the fleet ends whole and clients
//!    lose nothing. With autoscaling, the `scale` subresource reports `.spec.replicas` (1), not
//!    the live size, so a `maxUnavailable` budget would admit every eviction at once: shown
//!    here with such a budget, which is why the operator writes an absolute `minAvailable`;
//! 7. a gateway process SIGKILLed: the pod's container is restarted, its clients resume
//!    (elsewhere, or on the restarted node), nothing is lost.
//!
//! Also: a gateway that stops answering (SIGSTOP) while the fleet is asked to shrink is neither
//! deleted blindly (it may hold clients) nor replaced by a healthy node's drain; once it answers
//! again it is drained like any other.

mod cluster;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster::{Cluster, Fleet, Load, wait};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use wsfleet_tests::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evictions_and_killed_gateways_on_a_real_api_server() {
    let cluster = Cluster::start(3).await;
    cluster.install_operator(&[]).await;
    let redis = RedisServer::start().expect("redis-server");
    machine_drain(
        &cluster,
        &redis.url(),
        "drain-fixed",
        json!({"replicas": 4}),
    )
    .await;
    machine_drain(
        &cluster,
        &redis.url(),
        "drain-autoscaled",
        json!({"autoscaling": {"enabled": true, "minReplicas": 4, "maxReplicas": 6,
                               "targetConnectionsPerNode": 1000}}),
    )
    .await;
    killed_gateway(&cluster, &redis.url()).await;
    silent_gateway(&cluster, &redis.url()).await;
    cluster.assert_operator_never_forbidden().await;
}

async fn silent_gateway(cluster: &Cluster, redis_url: &str) {
    let ns = "silent";
    let (fleet, _service, load) = Fleet::under_load(cluster, ns, redis_url, 3, 9).await;

    let recorder = fleet.record();
    let silent = fleet.pods().await[0].name_any();
    assert!(cluster.kubelet.signal(ns, &silent, libc::SIGSTOP));
    fleet.patch_spec(json!({"replicas": 2})).await;
    // Long enough for several reconciles, short of the liveness probe's 30 s.
    let unreachable = wait(Duration::from_secs(15), || async {
        let status = fleet.get().await.status.unwrap_or_default();
        status
            .nodes
            .iter()
            .any(|n| n.name == silent && n.unreachable.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = fleet.pods().await;
    let record = recorder.get();
    assert!(cluster.kubelet.signal(ns, &silent, libc::SIGCONT));
    assert!(
        unreachable,
        "the silent node shows as unreachable: {:?}",
        fleet.get().await.status
    );
    assert_eq!(pods.len(), 3, "nothing deleted while a node is silent");
    assert!(
        pods.iter().any(|p| p.name_any() == silent),
        "the silent node is kept"
    );
    assert_eq!(
        record.max_leaving, 0,
        "no healthy node drained in its place: {record:?}"
    );

    let scaled = fleet.until_serving(2, Duration::from_secs(120)).await;
    let record = recorder.get();
    assert!(scaled, "two nodes once the silent one answers: {record:?}");
    assert!(record.deleted_undrained.is_empty(), "{record:?}");
    assert!(record.max_draining <= 1, "{record:?}");
    let nodes = fleet.serving_nodes().await;
    let published = load.finish(&nodes).await;
    eprintln!("silent node: {published} messages, none lost");
}

/// The PDB's `disruptionsAllowed` once the disruption controller has looked at it.
async fn disruptions_allowed(api: &Api<PodDisruptionBudget>, name: &str) -> Option<i32> {
    let status = api.get_opt(name).await.ok()??.status?;
    (status.observed_generation.is_some()).then_some(status.disruptions_allowed)
}

async fn machine_drain(cluster: &Cluster, redis_url: &str, ns: &str, extra: Value) {
    let autoscaled = extra["autoscaling"]["enabled"] == json!(true);
    let fleet = Fleet::create(cluster, ns, redis_url, extra).await;
    assert!(
        fleet.until_serving(4, Duration::from_secs(120)).await,
        "{ns}: four nodes serve:\n{}",
        cluster.operator_logs().await
    );
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(fleet.client.clone(), ns);
    if autoscaled {
        // The defect, shown: the scale subresource says 1 while four nodes serve, and a
        // maxUnavailable: 1 budget sized from it lets every node go at once.
        let scale = fleet
            .api()
            .get_scale("chat")
            .await
            .expect("scale subresource");
        assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1), "{ns}");
        assert_eq!(scale.status.map(|s| s.replicas), Some(4), "{ns}");
        let naive: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "max-unavailable"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"wsfleet.io/fleet": "chat"}}},
        }))
        .expect("a PDB");
        budgets
            .create(&PostParams::default(), &naive)
            .await
            .expect("creating the naive budget");
        // The controller-manager maps the fleet kind once its discovery refreshes (every 30 s),
        // and re-checks a budget that failed only when something about it changes: touch it.
        let touches = std::sync::atomic::AtomicU32::new(0);
        let shown = wait(Duration::from_secs(120), || async {
            if disruptions_allowed(&budgets, "max-unavailable").await == Some(4) {
                return true;
            }
            let n = touches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n % 25 == 24 {
                let touch = json!({"metadata": {"annotations": {"touched": n.to_string()}}});
                let _ = budgets
                    .patch(
                        "max-unavailable",
                        &PatchParams::default(),
                        &Patch::Merge(&touch),
                    )
                    .await;
            }
            false
        })
        .await;
        assert!(
            shown,
            "{ns}: a maxUnavailable budget over the autoscaled fleet allows all 4 evictions: {:?}",
            budgets
                .get_opt("max-unavailable")
                .await
                .ok()
                .flatten()
                .and_then(|b| b.status)
        );
        budgets
            .delete("max-unavailable", &DeleteParams::default())
            .await
            .expect("deleting the naive budget");
    }
    let budgeted = wait(Duration::from_secs(30), || async {
        disruptions_allowed(&budgets, "chat").await == Some(1)
    })
    .await;
    assert!(
        budgeted,
        "{ns}: the operator's budget allows one eviction: {:?}",
        budgets
            .get_opt("chat")
            .await
            .ok()
            .flatten()
            .map(|b| (b.spec, b.status))
    );

    let service = fleet.service().await;
    let load = Load::start(&service.url(), 8).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recorder = fleet.record();
    let original: Vec<String> = fleet.pods().await.iter().map(|p| p.name_any()).collect();

    // Every pod evicted at once, each retried on 429 as kubectl drain does (kube's client
    // also retries a 429 a few times on its own before it reports one).
    let pods: Api<Pod> = Api::namespaced(fleet.client.clone(), ns);
    let started = tokio::time::Instant::now();
    let evictions: Vec<_> = original
        .iter()
        .map(|name| {
            let (pods, name) = (pods.clone(), name.clone());
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
                while tokio::time::Instant::now() < deadline {
                    match pods.evict(&name, &EvictParams::default()).await {
                        Ok(_) => return true,
                        Err(kube::Error::Api(s)) if s.code == 404 => return true,
                        Err(kube::Error::Api(s)) if s.code == 429 => {}
                        Err(e) => eprintln!("evicting {name}: {e}"),
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                false
            })
        })
        .collect();
    for eviction in evictions {
        assert!(
            eviction.await.expect("eviction task"),
            "{ns}: every pod is evicted in time"
        );
    }
    let evicting = started.elapsed();
    let whole = wait(Duration::from_secs(180), || async {
        let pods = fleet.pods().await;
        pods.len() == 4
            && pods.iter().all(cluster::serving)
            && pods.iter().all(|p| !original.contains(&p.name_any()))
    })
    .await;
    assert!(
        whole,
        "{ns}: the fleet ends whole on new nodes:\n{}",
        cluster.operator_logs().await
    );
    let nodes = fleet.serving_nodes().await;
    let (hints, distinct) = load.hints();
    assert!(
        hints >= 8 && distinct > 1,
        "{ns}: the evicted nodes told their clients when to move, at jittered times: \
         {hints} hints, {distinct} distinct delays"
    );
    let published = load.finish(&nodes).await;
    let record = recorder.get();
    eprintln!(
        "{ns}: {hints} reconnect hints ({distinct} distinct delays); \
         evictions admitted over {evicting:?}; {published} messages; most pods {}, \
         fewest serving {}, most leaving at once {}",
        record.max_pods, record.min_serving, record.max_leaving
    );
    assert!(
        record.min_serving >= 3,
        "{ns}: never fewer than desired − maxUnavailable nodes serving: {record:?}"
    );
    for name in &original {
        let log = cluster.kubelet.logs(ns, name);
        assert!(
            log.contains("shutdown signal; draining") && log.contains("drained; exiting"),
            "{ns}: evicted node {name} drained its clients before exiting:\n{log}"
        );
    }
}

async fn killed_gateway(cluster: &Cluster, redis_url: &str) {
    let ns = "killed";
    let (fleet, _service, load) = Fleet::under_load(cluster, ns, redis_url, 3, 9).await;

    let victim = load.nodes()[0].clone();
    let on_victim = load.nodes().iter().filter(|n| **n == victim).count();
    let (reconnects_before, _) = load.reconnect_peak();
    assert!(
        cluster.kubelet.signal(ns, &victim, libc::SIGKILL),
        "{victim} has a process"
    );
    // Its clients reconnect: to another node, or to the same node id once the kubelet has
    // restarted its container (the Service lists it again when it is Ready).
    let resumed = wait(Duration::from_secs(60), || async {
        load.reconnect_peak().0 >= reconnects_before + on_victim
            && load.nodes().iter().all(|n| !n.is_empty())
    })
    .await;
    assert!(
        resumed,
        "the killed node's {on_victim} clients resumed: {:?}",
        load.nodes()
    );
    let back = wait(Duration::from_secs(120), || async {
        let pods = fleet.pods().await;
        let restarted = pods.iter().any(|p| {
            p.name_any() == victim
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .is_some_and(|c| c.restart_count >= 1)
        });
        let replaced = !pods.iter().any(|p| p.name_any() == victim);
        pods.iter().filter(|p| cluster::serving(p)).count() == 3 && (restarted || replaced)
    })
    .await;
    assert!(
        back,
        "the killed node was restarted or replaced:\n{}",
        cluster.operator_logs().await
    );
    let nodes: BTreeSet<String> = fleet.serving_nodes().await.into_iter().collect();
    let published = load.finish(&nodes.into_iter().collect::<Vec<_>>()).await;
    eprintln!("killed: {published} messages, none lost");
}
