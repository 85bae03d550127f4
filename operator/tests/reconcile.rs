//! Reconcile against an in-process fake Kubernetes API (kube-fake-client: CRUD, server-side
//! apply, label selectors, status subresource; no watch, so each test calls `reconcile` the way
//! the controller would after a change).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use kube_fake_client::{ClientBuilder, interceptor};
use serde_json::json;
use wsfleet_operator::crd::WebSocketFleet;
use wsfleet_operator::metrics::Metrics;
use wsfleet_operator::reconcile::{Context, error_policy, reconcile};
use wsfleet_operator::resources::REVISION_LABEL;
use wsfleet_operator::resources::sysctl::KubeVersion;

mod support;
use support::admin_node::{AdminNode, AdminNodes};

const NS: &str = "prod";

struct Harness {
    client: kube::Client,
    ctx: Arc<Context>,
    /// Stand-in admin APIs of the pods made Ready.
    nodes: AdminNodes,
}

impl Harness {
    async fn new(spec: serde_json::Value) -> Harness {
        Harness::with_interceptors(spec, interceptor::Funcs::new()).await
    }

    async fn with_interceptors(spec: serde_json::Value, funcs: interceptor::Funcs) -> Harness {
        let mut fleet = WebSocketFleet::new("chat", serde_json::from_value(spec).expect("spec"));
        fleet.metadata.namespace = Some(NS.into());
        let client = ClientBuilder::new()
            .with_resource::<WebSocketFleet>()
            .with_status_subresource::<WebSocketFleet>()
            .with_status_subresource::<Pod>()
            .with_interceptor_funcs(funcs)
            .build()
            .await
            .expect("fake client");
        let fleets: Api<WebSocketFleet> = Api::namespaced(client.clone(), NS);
        fleets
            .create(&PostParams::default(), &fleet)
            .await
            .expect("create fleet");
        let metrics = Metrics::new().expect("metrics");
        let server = KubeVersion {
            major: 1,
            minor: 32,
        };
        let nodes = AdminNodes::default();
        let ctx = Arc::new(
            Context::new(client.clone(), metrics, server)
                .with_admin_address(nodes.address_fn())
                .with_gateway_timeout(Duration::from_secs(5)),
        );
        Harness { client, ctx, nodes }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn fleet(&self) -> WebSocketFleet {
        self.api::<WebSocketFleet>()
            .get("chat")
            .await
            .expect("get fleet")
    }

    /// One reconcile of the stored fleet, as the controller would run it.
    async fn reconcile(&self) {
        reconcile(Arc::new(self.fleet().await), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
    }

    async fn pods(&self) -> Vec<Pod> {
        let mut pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels("wsfleet.io/fleet=chat"))
            .await
            .expect("list pods")
            .items;
        pods.sort_by_key(|p| p.name_any());
        pods
    }

    /// Plays the kubelet: marks every pod Running and Ready, and starts a stand-in admin API
    /// for each (no clients) that checks the fleet's admin token.
    async fn make_pods_ready(&self) {
        let token = self.token().await;
        for pod in self.pods().await {
            if self.nodes.get(&pod.name_any()).is_none() {
                let node = AdminNode::start(&pod.name_any(), &token, 0).await;
                self.nodes.insert(&pod.name_any(), node);
            }
            let status = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"}
            ]}});
            self.api::<Pod>()
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .expect("patch pod status");
        }
    }

    async fn token(&self) -> String {
        let secret = self
            .api::<Secret>()
            .get("chat-admin-token")
            .await
            .expect("admin token secret");
        let data = secret.data.expect("secret data");
        String::from_utf8(data["token"].0.clone()).expect("utf-8 token")
    }

    /// New pods become Ready, and draining nodes' clients have reconnected elsewhere.
    async fn settle(&self) {
        self.make_pods_ready().await;
        for (_, node) in self.nodes.all() {
            if node.draining() {
                node.clients_left();
            }
        }
    }

    fn draining_pods(pods: &[Pod]) -> Vec<String> {
        pods.iter()
            .filter(|p| p.labels().contains_key("wsfleet.io/draining"))
            .map(|p| p.name_any())
            .collect()
    }

    /// The fleet's gateway configs, by name.
    async fn configs(&self) -> Vec<ConfigMap> {
        self.api::<ConfigMap>()
            .list(&ListParams::default().labels("wsfleet.io/fleet=chat"))
            .await
            .expect("list configmaps")
            .items
    }

    async fn patch_spec(&self, spec: serde_json::Value) {
        self.api::<WebSocketFleet>()
            .patch(
                "chat",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .expect("patch fleet spec");
    }

    async fn condition(&self, type_: &str) -> (String, String, String) {
        let fleet = self.fleet().await;
        fleet
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_))
            .map(|c| (c.status, c.reason, c.message))
            .unwrap_or_default()
    }
}

fn base_spec(replicas: i32) -> serde_json::Value {
    json!({
        "image": "gw:1",
        "replicas": replicas,
        "auth": {"anonymous": true},
        "backplane": {"redis": {"url": "redis://redis:6379"}}
    })
}

fn revision(pod: &Pod) -> String {
    pod.labels()
        .get(REVISION_LABEL)
        .cloned()
        .unwrap_or_default()
}

fn owned_by_fleet<K: Resource>(object: &K, fleet: &WebSocketFleet) -> bool {
    object.meta().owner_references.as_ref().is_some_and(|refs| {
        refs.iter().any(|r| {
            r.kind == "WebSocketFleet"
                && Some(&r.uid) == fleet.metadata.uid.as_ref()
                && r.controller == Some(true)
        })
    })
}

#[tokio::test]
async fn new_fleet_gets_pods_and_owned_objects() {
    let h = Harness::new(base_spec(3)).await;
    h.reconcile().await;
    let fleet = h.fleet().await;

    let pods = h.pods().await;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        assert!(owned_by_fleet(pod, &fleet), "{} not owned", pod.name_any());
        assert!(
            pod.name_any()
                .starts_with(&format!("chat-{}-", revision(pod)))
        );
    }
    let services: Api<Service> = h.api();
    for name in ["chat", "chat-nodes"] {
        assert!(owned_by_fleet(
            &services.get(name).await.expect(name),
            &fleet
        ));
    }
    let configs = h.configs().await;
    assert_eq!(configs.len(), 1);
    assert!(owned_by_fleet(&configs[0], &fleet));
    assert_eq!(configs[0].immutable, Some(true));
    let toml = &configs[0].data.as_ref().expect("data")["gateway.toml"];
    assert!(toml.contains("max_connections = 100000"), "{toml}");
    let mounted = pods[0]
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find_map(|v| v.config_map.as_ref()))
        .map(|c| c.name.clone());
    assert_eq!(
        mounted, configs[0].metadata.name,
        "pods mount the current config"
    );
    let secret = h
        .api::<Secret>()
        .get("chat-admin-token")
        .await
        .expect("secret");
    assert!(owned_by_fleet(&secret, &fleet));
    let pdb = h
        .api::<PodDisruptionBudget>()
        .get("chat")
        .await
        .expect("pdb");
    assert!(owned_by_fleet(&pdb, &fleet));

    // Status reports what was observed before acting; the next round sees the new pods.
    let status = fleet.status.expect("status written");
    assert_eq!((status.replicas, status.desired_replicas), (0, 3));
    h.reconcile().await;
    let fleet = h.fleet().await;
    let status = fleet.status.expect("status written");
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.desired_replicas
        ),
        (3, 0, 3)
    );
    assert_eq!(status.observed_generation, fleet.metadata.generation);
    assert_eq!(status.nodes.len(), 3);
    assert_eq!(
        h.pods().await.len(),
        3,
        "a second round creates nothing more"
    );
    let events = h
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("CreatingNode")),
        "no CreatingNode event"
    );
}

#[tokio::test]
async fn status_follows_pod_readiness() {
    let h = Harness::new(base_spec(2)).await;
    h.reconcile().await;
    assert_eq!(h.condition("Ready").await.0, "False");
    h.make_pods_ready().await;
    h.reconcile().await;
    let status = h.fleet().await.status.expect("status");
    assert_eq!(status.ready_replicas, 2);
    assert!(
        status
            .nodes
            .iter()
            .all(|n| format!("{:?}", n.phase) == "Serving")
    );
    assert_eq!(h.condition("Ready").await.0, "True");
    assert_eq!(h.condition("Progressing").await.1, "Complete");
    assert_eq!(
        h.pods().await.len(),
        2,
        "a steady fleet creates nothing more"
    );
}

#[tokio::test]
async fn deleted_pod_is_recreated() {
    let h = Harness::new(base_spec(2)).await;
    h.reconcile().await;
    let victim = h.pods().await[0].name_any();
    h.api::<Pod>()
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    assert_eq!(h.pods().await.len(), 1);
    h.reconcile().await;
    let names: Vec<String> = h.pods().await.iter().map(|p| p.name_any()).collect();
    assert_eq!(names.len(), 2);
    assert!(!names.contains(&victim), "a new node, not the old name");
}

#[tokio::test]
async fn spec_change_rolls_a_new_revision() {
    let h = Harness::new(base_spec(2)).await;
    h.reconcile().await;
    h.make_pods_ready().await;
    h.reconcile().await;
    let old_revision = revision(&h.pods().await[0]);
    let token_before = h
        .api::<Secret>()
        .get("chat-admin-token")
        .await
        .expect("secret")
        .data;

    h.patch_spec(json!({"connections": {"maxPerNode": 5000}}))
        .await;
    h.reconcile().await;

    let configs = h.configs().await;
    assert_eq!(
        configs.len(),
        2,
        "old pods keep their config while they run"
    );
    assert!(configs.iter().any(|cm| {
        cm.data.as_ref().expect("data")["gateway.toml"].contains("max_connections = 5000")
    }));
    let pods = h.pods().await;
    let new: Vec<&Pod> = pods
        .iter()
        .filter(|p| revision(p) != old_revision)
        .collect();
    assert_eq!(new.len(), 1, "one surge pod of the new revision");
    assert_eq!(pods.len(), 3);
    assert_eq!(h.condition("Progressing").await.1, "RollingOut");

    // Once the new pod is Ready an old one is drained (not deleted), and the next new one is
    // surged in its place.
    h.make_pods_ready().await;
    h.reconcile().await;
    let pods = h.pods().await;
    let old = pods.iter().filter(|p| revision(p) == old_revision).count();
    assert_eq!(old, 2, "the old pod is drained first, not deleted");
    let draining = Harness::draining_pods(&pods);
    assert_eq!(draining.len(), 1, "one node drains at a time");
    let node = h.nodes.get(&draining[0]).expect("stand-in node");
    assert_eq!(node.drains()[0]["reason"], "rollout");

    // Drive the rollout to its end (bounded): every pod new, the old config gone; never more
    // than maxUnavailable (1) draining at once.
    for _ in 0..12 {
        h.settle().await;
        h.reconcile().await;
        assert!(Harness::draining_pods(&h.pods().await).len() <= 1);
    }
    let pods = h.pods().await;
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| revision(p) != old_revision));
    assert_eq!(
        h.configs().await.len(),
        1,
        "the unused config version is deleted"
    );
    assert_eq!(h.condition("Progressing").await.1, "Complete");

    let token_after = h
        .api::<Secret>()
        .get("chat-admin-token")
        .await
        .expect("secret")
        .data;
    assert_eq!(
        token_before, token_after,
        "the admin token is never rotated"
    );
}

#[tokio::test]
async fn scale_down_drains_the_least_connected_and_deletes_when_empty() {
    let h = Harness::new(base_spec(3)).await;
    h.reconcile().await;
    h.make_pods_ready().await;
    let names: Vec<String> = h.pods().await.iter().map(|p| p.name_any()).collect();
    // Give the nodes different loads (replacing their stand-ins): the second holds the fewest.
    let token = h.token().await;
    for (name, connections) in names.iter().zip([30, 10, 20]) {
        h.nodes
            .insert(name, AdminNode::start(name, &token, connections).await);
    }
    h.patch_spec(json!({"replicas": 1})).await;

    h.reconcile().await;
    let pods = h.pods().await;
    assert_eq!(pods.len(), 3, "nothing is deleted before its drain");
    assert_eq!(Harness::draining_pods(&pods), [names[1].clone()]);
    let drains = h.nodes.get(&names[1]).expect("node").drains();
    assert_eq!(
        drains.len(),
        1,
        "the drain was accepted with the admin token"
    );
    assert_eq!(drains[0]["reason"], "scale-down");
    assert!(drains[0]["window_seconds"].as_i64() >= Some(60));
    let status = h.fleet().await.status.expect("status");
    assert_eq!(status.connections, 60);
    assert!(status.selector.ends_with(",!wsfleet.io/draining"));
    assert!(
        status
            .nodes
            .iter()
            .any(|n| n.name == names[1] && n.phase == wsfleet_operator::crd::NodePhase::Draining)
    );

    // While it still holds clients it stays, and no second node drains (maxUnavailable 1).
    h.reconcile().await;
    let pods = h.pods().await;
    assert_eq!(pods.len(), 3);
    assert_eq!(Harness::draining_pods(&pods).len(), 1);

    // Empty: deleted, and the next least connected drains.
    h.nodes.get(&names[1]).expect("node").clients_left();
    h.reconcile().await;
    let pods = h.pods().await;
    assert_eq!(pods.len(), 2);
    assert_eq!(Harness::draining_pods(&pods), [names[2].clone()]);

    h.nodes.get(&names[2]).expect("node").clients_left();
    h.reconcile().await;
    let pods = h.pods().await;
    assert_eq!(
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        [names[0].clone()]
    );
    let status = h.fleet().await.status.expect("status");
    assert_eq!(status.desired_replicas, 1);
    assert_eq!(status.connections, 30);
    let events = h
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events");
    for reason in ["DrainingNode", "NodeDrained"] {
        assert!(
            events
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason)),
            "no {reason} event"
        );
    }
}

#[tokio::test]
async fn an_unreachable_node_is_not_deleted() {
    let h = Harness::new(base_spec(2)).await;
    h.reconcile().await;
    h.make_pods_ready().await;
    // Both pods are Running and Ready, but nothing answers on their admin port.
    let h = Harness {
        ctx: Arc::new(
            Context::new(
                h.client.clone(),
                Metrics::new().expect("metrics"),
                KubeVersion {
                    major: 1,
                    minor: 32,
                },
            )
            .with_admin_address(Arc::new(|_: &Pod| {
                Some(std::net::SocketAddr::from(([127, 0, 0, 1], 1)))
            }))
            .with_gateway_timeout(Duration::from_secs(2)),
        ),
        nodes: AdminNodes::default(),
        client: h.client.clone(),
    };
    h.patch_spec(json!({"replicas": 1})).await;
    for _ in 0..2 {
        h.reconcile().await;
    }
    assert_eq!(h.pods().await.len(), 2, "no node is deleted blindly");
    let (status, reason, message) = h.condition("Degraded").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "NodesUnreachable"),
        "{message}"
    );
    let fleet = h.fleet().await.status.expect("status");
    assert!(fleet.nodes.iter().all(|n| n.unreachable.is_some()));
}

#[tokio::test]
async fn bad_spec_degrades_without_acting() {
    let h = Harness::new(base_spec(2)).await;
    h.reconcile().await;
    h.patch_spec(json!({"replicas": 4, "drain": {"maxUnavailable": "many"}}))
        .await;
    h.reconcile().await;
    h.reconcile().await;
    let (status, reason, message) = h.condition("Degraded").await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.contains("drain.maxUnavailable"), "{message}");
    assert_eq!(
        h.pods().await.len(),
        2,
        "no pods created for a spec it cannot act on"
    );

    h.patch_spec(json!({"drain": {"maxUnavailable": 1}})).await;
    h.reconcile().await;
    assert_eq!(h.condition("Degraded").await.0, "False");
    assert_eq!(h.pods().await.len(), 4);
}

#[tokio::test]
async fn api_failures_are_retried_not_fatal() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let funcs = interceptor::Funcs::new().create(move |ctx| {
        let is_pod = ctx.object.get("kind").and_then(|k| k.as_str()) == Some("Pod");
        if is_pod && flag.load(Ordering::SeqCst) {
            return Err(kube_fake_client::Error::Internal(
                "injected: API unavailable".into(),
            ));
        }
        Ok(None)
    });
    let h = Harness::with_interceptors(base_spec(2), funcs).await;

    let fleet = Arc::new(h.fleet().await);
    let error = reconcile(fleet.clone(), h.ctx.clone())
        .await
        .expect_err("pod creation fails");
    assert!(error.to_string().contains("create Pod"), "{error}");
    let first = error_policy(fleet.clone(), &error, h.ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(2)));
    let second = error_policy(fleet, &error, h.ctx.clone());
    assert_eq!(
        second,
        Action::requeue(Duration::from_secs(4)),
        "backoff doubles"
    );
    assert!(
        h.ctx
            .metrics
            .render()
            .contains("wsfleet_operator_reconcile_errors_total{error=\"act\"} 2")
    );

    failing.store(false, Ordering::SeqCst);
    h.reconcile().await;
    assert_eq!(h.pods().await.len(), 2, "recovers once the API does");
}

#[tokio::test]
async fn deleting_the_fleet_deletes_what_it_owns() {
    let h = Harness::new(base_spec(2)).await;
    h.reconcile().await;
    let fleet = h.fleet().await;
    let sysctls = fleet
        .status
        .as_ref()
        .and_then(|s| s.sysctls.clone())
        .expect("sysctl report");
    assert!(sysctls.skipped.iter().any(|s| s.name == "fs.file-max"));

    h.api::<WebSocketFleet>()
        .delete("chat", &DeleteParams::background())
        .await
        .expect("delete fleet");
    assert!(h.pods().await.is_empty(), "pods are garbage-collected");
    assert!(
        h.configs().await.is_empty(),
        "configs are garbage-collected"
    );
    let services = h
        .api::<Service>()
        .list(&ListParams::default())
        .await
        .expect("services");
    assert!(services.items.is_empty());
    assert!(
        h.api::<Secret>()
            .get_opt("chat-admin-token")
            .await
            .expect("get")
            .is_none()
    );
}
