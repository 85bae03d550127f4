//! How a fleet is exposed and watched, on a real API server (with the operator installed by
//! the chart, under its RBAC):
//!
//! 1. bad `spec.service` combinations are refused by the CRD's CEL rules with the messages
//!    `docs/crd-reference.md` shows;
//! 2. `spec.priorityClassName` reaches the pods (the real Priority admission resolves it);
//!    `spec.service` shapes the client Service (NodePort → LoadBalancer → ClusterIP) and each
//!    change is applied in place: same pods, same revision, no drain;
//! 3. the fleet's NetworkPolicy is accepted by the API server with the expected peers and named
//!    ports, and is deleted when the fleet opts out. The process kubelet does not enforce
//!    NetworkPolicy: what is proven is the object, not the packet filtering;
//! 4. a PodMonitor asked for on a cluster without its CRD is reported (`Monitored=False`,
//!    `PodMonitorCRDMissing`, a Warning event) while the fleet serves; once the CRD is installed
//!    (a minimal fixture) the PodMonitor appears selecting the fleet's pods on port `admin`, and
//!    turning it off deletes it;
//! 5. credentials have one job each, rotate without restarts, and a TLS Redis is reached with
//!    the CA from a Secret ([`credentials`]).

mod cluster;
#[path = "operator_expose/credentials.rs"]
mod credentials;

use std::time::Duration;

use cluster::{Cluster, Fleet, OPERATOR_NS, repo, wait};
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use wsfleet_operator::crd::WebSocketFleet;
use wsfleet_tests::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exposure_network_policy_and_monitoring_on_a_real_api_server() {
    let cluster = Cluster::start(2).await;
    cluster.install_operator(&[]).await;
    let redis = RedisServer::start().expect("redis-server");
    bad_service_specs_are_refused(&cluster).await;
    // Before the fleet: the Priority admission refuses pods naming an unknown class.
    create_priority_class(&cluster).await;
    let fleet = Fleet::create(
        &cluster,
        "exposed",
        &redis.url(),
        json!({"priorityClassName": "realtime-gateway",
               "service": {"type": "NodePort", "externalTrafficPolicy": "Local",
                           "annotations": {"example.com/lb": "internal"}}}),
    )
    .await;
    assert!(
        fleet.until_serving(1, Duration::from_secs(120)).await,
        "the fleet serves:\n{}",
        cluster.operator_logs().await
    );
    priority_reaches_the_pods(&fleet).await;
    service_changes_apply_in_place(&cluster, &fleet).await;
    network_policy_is_accepted_and_opt_out_deletes_it(&cluster, &fleet).await;
    pod_monitor_is_reported_then_applied_then_deleted(&cluster, &fleet).await;
    credentials::credentials_have_one_job_each(&cluster).await;
    cluster.assert_operator_never_forbidden().await;
}

async fn bad_service_specs_are_refused(cluster: &Cluster) {
    let client = cluster.plane.namespace("refused").await;
    let fleets: Api<WebSocketFleet> = Api::namespaced(client, "refused");
    let doc = std::fs::read_to_string(repo().join("docs/crd-reference.md")).expect("docs");
    let cases = [
        (
            json!({"externalTrafficPolicy": "Local"}),
            "service.externalTrafficPolicy applies only to type NodePort or LoadBalancer",
        ),
        (
            json!({"type": "NodePort", "loadBalancerSourceRanges": ["10.0.0.0/8"]}),
            "service.loadBalancerSourceRanges and service.loadBalancerClass apply only to type LoadBalancer",
        ),
        (
            json!({"loadBalancerClass": "example.com/lb"}),
            "service.loadBalancerSourceRanges and service.loadBalancerClass apply only to type LoadBalancer",
        ),
        (
            json!({"sessionAffinityTimeoutSeconds": 60}),
            "service.sessionAffinityTimeoutSeconds applies only with sessionAffinity ClientIP",
        ),
        (
            json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["everyone"]}),
            "spec.service.loadBalancerSourceRanges[0]",
        ),
        (json!({"type": "Internal"}), "spec.service.type"),
    ];
    for (service, message) in cases {
        let body = json!({
            "apiVersion": "wsfleet.io/v1alpha1", "kind": "WebSocketFleet",
            "metadata": {"name": "bad"},
            "spec": {"image": cluster::GATEWAY_IMAGE, "auth": {"anonymous": true},
                     "service": service},
        });
        let refused = fleets
            .patch("bad", &PatchParams::apply("kubectl"), &Patch::Apply(&body))
            .await
            .expect_err(&format!("{service}: refused"));
        let kube::Error::Api(status) = &refused else {
            panic!("{service}: not an API refusal: {refused}");
        };
        assert_eq!(status.code, 422, "{service}: {status:?}");
        assert!(
            status.message.contains(message),
            "{service}: the API server says {:?}, not {message:?}",
            status.message
        );
        assert!(
            message.starts_with("spec.") || doc.contains(message),
            "docs/crd-reference.md shows {message:?}"
        );
    }
}

async fn create_priority_class(cluster: &Cluster) {
    let class: PriorityClass = serde_json::from_value(json!({
        "metadata": {"name": "realtime-gateway"},
        "value": 1_000_000,
        "preemptionPolicy": "PreemptLowerPriority",
        "description": "gateway nodes holding many clients",
    }))
    .expect("priority class");
    Api::<PriorityClass>::all(cluster.client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("creating the PriorityClass");
}

async fn priority_reaches_the_pods(fleet: &Fleet) {
    for pod in fleet.pods().await {
        let spec = pod.spec.expect("pod spec");
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("realtime-gateway")
        );
        assert_eq!(spec.priority, Some(1_000_000), "resolved by admission");
    }
}

/// The pod names and the fleet's revision, once the status describes the current spec.
async fn settled(fleet: &Fleet) -> (Vec<String>, Option<String>) {
    let generation = fleet.get().await.metadata.generation;
    let observed = wait(Duration::from_secs(60), || async {
        fleet.get().await.status.and_then(|s| s.observed_generation) == generation
    })
    .await;
    assert!(
        observed,
        "the operator reconciled generation {generation:?}"
    );
    let mut names: Vec<String> = fleet.pods().await.iter().map(|p| p.name_any()).collect();
    names.sort();
    (names, fleet.get().await.status.and_then(|s| s.revision))
}

async fn service_changes_apply_in_place(cluster: &Cluster, fleet: &Fleet) {
    let services: Api<Service> = Api::namespaced(fleet.client.clone(), &fleet.namespace);
    let before = settled(fleet).await;
    let service = services.get("chat").await.expect("client Service");
    let spec = service.spec.clone().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert!(spec.ports.expect("ports")[0].node_port.is_some());
    assert_eq!(service.annotations()["example.com/lb"], "internal");

    // (spec.service, expected type, traffic policy, source ranges, affinity)
    let steps = [
        (
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                   "loadBalancerSourceRanges": ["203.0.113.0/24"],
                   "sessionAffinity": "ClientIP", "sessionAffinityTimeoutSeconds": 600,
                   "labels": {"team": "realtime"}}),
            "LoadBalancer",
            Some("Cluster"),
            Some(vec!["203.0.113.0/24".to_string()]),
            "ClientIP",
        ),
        (json!({}), "ClusterIP", None, None, "None"),
    ];
    for (settings, type_, traffic, ranges, affinity) in steps {
        let mut spec = fleet.get().await.spec;
        spec.service = serde_json::from_value(settings.clone()).expect("service settings");
        fleet
            .apply(serde_json::to_value(&spec).expect("spec as JSON"))
            .await;
        let applied = wait(Duration::from_secs(60), || async {
            services
                .get("chat")
                .await
                .ok()
                .and_then(|s| s.spec)
                .is_some_and(|s| {
                    s.type_.as_deref() == Some(type_)
                        && s.external_traffic_policy.as_deref() == traffic
                        && s.load_balancer_source_ranges == ranges
                        && s.session_affinity.as_deref() == Some(affinity)
                })
        })
        .await;
        assert!(
            applied,
            "{settings}: the Service follows: {:#?}\n{}",
            services.get("chat").await.ok().and_then(|s| s.spec),
            cluster.operator_logs().await
        );
        assert_eq!(
            settled(fleet).await,
            before,
            "{settings}: same pods, same revision"
        );
    }
    let service = services.get("chat").await.expect("client Service");
    assert!(
        !service.annotations().contains_key("example.com/lb"),
        "annotations the fleet dropped are gone"
    );
    let spec = service.spec.expect("spec");
    assert!(spec.ports.expect("ports")[0].node_port.is_none());
    assert!(fleet.until_serving(1, Duration::from_secs(30)).await);
}

async fn network_policy_is_accepted_and_opt_out_deletes_it(cluster: &Cluster, fleet: &Fleet) {
    let policies: Api<NetworkPolicy> = Api::namespaced(fleet.client.clone(), &fleet.namespace);
    let policy = policies
        .get("chat")
        .await
        .expect("the fleet's NetworkPolicy");
    assert!(
        policy
            .owner_references()
            .iter()
            .any(|r| r.kind == "WebSocketFleet" && r.controller == Some(true))
    );
    let spec = serde_json::to_value(policy.spec.expect("spec")).expect("JSON");
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "wsfleet-gateway", "wsfleet.io/fleet": "chat"})
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    let port = |name: &str| json!([{"port": name, "protocol": "TCP"}]);
    assert_eq!(
        spec["ingress"],
        json!([
            {"ports": port("ws")},
            {"ports": port("admin"), "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NS}}}]},
            {"ports": port("api"), "from": [
                {"namespaceSelector": {"matchLabels": {"wsfleet.io/api-access": "true"}}}]},
        ]),
        "ws from anywhere, admin from the operator's namespace, api from labelled namespaces"
    );

    // Peers from the spec: Prometheus' namespace to the admin port, one publisher to the API.
    let prometheus = json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}});
    let publisher = json!({"podSelector": {"matchLabels": {"app": "publisher"}}});
    fleet
        .patch_spec(json!({"networkPolicy": {"metricsFrom": [prometheus], "apiFrom": [publisher]}}))
        .await;
    let followed = wait(Duration::from_secs(60), || async {
        policies
            .get("chat")
            .await
            .ok()
            .and_then(|p| serde_json::to_value(p.spec).ok())
            .is_some_and(|s| {
                s["ingress"][1]["from"][1] == prometheus
                    && s["ingress"][2]["from"] == json!([publisher])
            })
    })
    .await;
    assert!(
        followed,
        "metricsFrom and apiFrom reach the policy: {:?}\n{}",
        policies.get("chat").await.ok().and_then(|p| p.spec),
        cluster.operator_logs().await
    );

    fleet
        .patch_spec(json!({"networkPolicy": {"enabled": false}}))
        .await;
    let deleted = wait(Duration::from_secs(60), || async {
        policies.get_opt("chat").await.ok().flatten().is_none()
    })
    .await;
    assert!(deleted, "opting out deletes the NetworkPolicy");
    assert!(fleet.until_serving(1, Duration::from_secs(30)).await);
}

fn pod_monitors(fleet: &Fleet) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"),
        "podmonitors",
    );
    Api::namespaced_with(fleet.client.clone(), &fleet.namespace, &resource)
}

/// The fleet's `Monitored` condition as (status, reason).
async fn monitored(fleet: &Fleet) -> Option<(String, String)> {
    let status = fleet.get().await.status?;
    let c = status.conditions.iter().find(|c| c.type_ == "Monitored")?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn pod_monitor_is_reported_then_applied_then_deleted(cluster: &Cluster, fleet: &Fleet) {
    fleet
        .patch_spec(
            json!({"monitoring": {"podMonitor": {"enabled": true, "interval": "15s",
                                                        "labels": {"release": "prometheus"}}}}),
        )
        .await;
    let missing = Some(("False".to_string(), "PodMonitorCRDMissing".to_string()));
    let reported = wait(Duration::from_secs(60), || async {
        monitored(fleet).await == missing
    })
    .await;
    assert!(
        reported,
        "Monitored=False PodMonitorCRDMissing without the CRD: {:?}\n{}",
        fleet.get().await.status,
        cluster.operator_logs().await
    );
    let warned = Api::<Event>::namespaced(fleet.client.clone(), &fleet.namespace)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("PodMonitorCRDMissing")
        });
    assert!(warned, "a Warning event says the CRD is missing");
    let status = fleet.get().await.status.expect("status");
    assert_eq!(status.ready_replicas, 1, "the fleet serves regardless");

    install_pod_monitor_crd(cluster).await;
    // Any change of the fleet wakes the operator; otherwise the next resync (60 s) would.
    fleet
        .api()
        .patch(
            &fleet.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"test/poke": "1"}}})),
        )
        .await
        .expect("annotating the fleet");
    let monitors = pod_monitors(fleet);
    let appeared = wait(Duration::from_secs(90), || async {
        monitors.get_opt("chat").await.ok().flatten().is_some()
    })
    .await;
    assert!(
        appeared,
        "the PodMonitor appears once its CRD exists:\n{}",
        cluster.operator_logs().await
    );
    let monitor = monitors.get("chat").await.expect("PodMonitor");
    assert_eq!(monitor.labels()["release"], "prometheus");
    assert_eq!(
        monitor.data["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "wsfleet-gateway", "wsfleet.io/fleet": "chat"})
    );
    assert_eq!(
        monitor.data["spec"]["podMetricsEndpoints"],
        json!([{"port": "admin", "path": "/metrics", "interval": "15s"}])
    );
    // The selector picks exactly the fleet's pods, and each has a port named admin.
    let selected: Vec<Pod> = Api::<Pod>::namespaced(fleet.client.clone(), &fleet.namespace)
        .list(
            &ListParams::default()
                .labels("app.kubernetes.io/name=wsfleet-gateway,wsfleet.io/fleet=chat"),
        )
        .await
        .expect("pods")
        .items;
    assert_eq!(selected.len(), 1);
    let ports: Vec<Value> = selected[0]
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| json!(p.name))
        .collect();
    assert!(ports.contains(&json!("admin")), "{ports:?}");
    let applied = wait(Duration::from_secs(30), || async {
        monitored(fleet).await == Some(("True".into(), "PodMonitorApplied".into()))
    })
    .await;
    assert!(applied, "Monitored=True: {:?}", fleet.get().await.status);

    fleet
        .patch_spec(json!({"monitoring": {"podMonitor": {"enabled": false}}}))
        .await;
    let deleted = wait(Duration::from_secs(60), || async {
        monitors.get_opt("chat").await.ok().flatten().is_none() && monitored(fleet).await.is_none()
    })
    .await;
    assert!(
        deleted,
        "turning it off deletes the PodMonitor and the condition:\n{}",
        cluster.operator_logs().await
    );
}

/// Applies the PodMonitor CRD fixture and waits until it is Established.
async fn install_pod_monitor_crd(cluster: &Cluster) {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/podmonitor-crd.yaml"))
        .expect("the fixture");
    let crd: Value = serde_saphyr::from_str(&text).expect("the fixture parses");
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    api.patch(
        "podmonitors.monitoring.coreos.com",
        &PatchParams::apply("kubectl"),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the API server accepts the PodMonitor CRD");
    let established = wait(Duration::from_secs(30), || async {
        api.get("podmonitors.monitoring.coreos.com")
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await;
    assert!(established, "the PodMonitor CRD becomes Established");
}
