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

const NS: &str = "prod";

struct Harness {
    client: kube::Client,
    ctx: Arc<Context>,
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
        let ctx = Arc::new(Context::new(client.clone(), metrics, server));
        Harness { client, ctx }
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

    /// Plays the kubelet: marks every pod Running and Ready.
    async fn make_pods_ready(&self) {
        for pod in self.pods().await {
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

    // Once the new pod is Ready an old one is replaced, and the next new one is surged.
    h.make_pods_ready().await;
    h.reconcile().await;
    let pods = h.pods().await;
    let old = pods.iter().filter(|p| revision(p) == old_revision).count();
    assert_eq!(old, 1, "one old pod replaced");
    assert_eq!(pods.len(), 3);

    // Drive the rollout to its end (bounded): every pod new, the old config gone.
    for _ in 0..10 {
        h.make_pods_ready().await;
        h.reconcile().await;
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
async fn scale_down_removes_surplus_nodes() {
    let h = Harness::new(base_spec(3)).await;
    h.reconcile().await;
    h.make_pods_ready().await;
    h.patch_spec(json!({"replicas": 1})).await;
    // One node leaves per round (maxUnavailable 1); the fake API deletes at once.
    for _ in 0..2 {
        h.reconcile().await;
    }
    assert_eq!(h.pods().await.len(), 1);
    let status = h.fleet().await.status.expect("status");
    assert_eq!(status.desired_replicas, 1);
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
