//! The CRD and a fleet's life on a real API server:
//!
//! 1. the CRD from `crds/` is accepted (structural schema, CEL within cost limits); every
//!    `examples/*.yaml` applies server-side; invalid specs are refused with the messages
//!    `docs/crd-reference.md` shows; `kubectl get wsf` prints Desired, Ready and Connections;
//! 2. a new fleet becomes Ready with its status, conditions, events and owner references, and
//!    deleting it lets the garbage collector remove everything the operator created;
//! 9. the operator's `/healthz` fails while its loops are wedged (here: the API server stops
//!    answering mid-call), the kubelet restarts it, and it reconciles again once the API
//!    server is back.
//!
//! Also: a spec only the operator can refuse (more than one node without a backplane) degrades
//! the fleet with the reason and creates nothing until it is fixed.

mod cluster;

use std::time::Duration;

use cluster::{Cluster, Fleet, repo, wait};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use wsfleet_operator::crd::WebSocketFleet;
use wsfleet_tests::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_crd_and_a_fleets_life_on_a_real_api_server() {
    let cluster = Cluster::start(3).await;
    crd_is_accepted_and_validates(&cluster).await;
    // The CRD came from crds/ (`kubectl apply --server-side`), so helm leaves it alone. A
    // short stall bound, so a wedged operator shows within the test.
    cluster
        .install_operator(&["--skip-crds", "--set", "liveness.stallSeconds=10"])
        .await;
    let redis = RedisServer::start().expect("redis-server");
    fleet_becomes_ready_and_is_collected(&cluster, &redis.url()).await;
    a_spec_the_operator_refuses_degrades_the_fleet(&cluster, &redis.url()).await;
    cluster.assert_operator_never_forbidden().await;
    a_wedged_operator_fails_liveness_and_is_restarted(&cluster, &redis.url()).await;
}

async fn a_spec_the_operator_refuses_degrades_the_fleet(cluster: &Cluster, redis_url: &str) {
    let client = cluster.plane.namespace("refused").await;
    let fleets: Api<WebSocketFleet> = Api::namespaced(client.clone(), "refused");
    let body = |backplane: Value| {
        let mut spec = json!({"image": cluster::GATEWAY_IMAGE, "replicas": 2,
                              "auth": {"anonymous": true}});
        if !backplane.is_null() {
            spec["backplane"] = backplane;
        }
        json!({"apiVersion": "wsfleet.io/v1alpha1", "kind": "WebSocketFleet",
               "metadata": {"name": "chat"}, "spec": spec})
    };
    fleets
        .patch(
            "chat",
            &PatchParams::apply("kubectl"),
            &Patch::Apply(&body(Value::Null)),
        )
        .await
        .expect("the schema accepts it");
    let degraded = wait(Duration::from_secs(60), || async {
        let status = fleets
            .get("chat")
            .await
            .ok()
            .and_then(|f| f.status)
            .unwrap_or_default();
        status.conditions.iter().any(|c| {
            c.type_ == "Degraded"
                && c.status == "True"
                && c.reason == "InvalidSpec"
                && c.message.contains("backplane")
        })
    })
    .await;
    assert!(
        degraded,
        "Degraded=True InvalidSpec naming the backplane: {:?}",
        fleets.get("chat").await.ok().and_then(|f| f.status)
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "refused");
    assert!(
        pods.list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .is_empty(),
        "nothing created"
    );
    let warned = Api::<Event>::namespaced(client.clone(), "refused")
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .any(|e| {
            e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("InvalidSpec")
        });
    assert!(warned, "a Warning event says why");

    fleets
        .patch(
            "chat",
            &PatchParams::apply("kubectl"),
            &Patch::Apply(&body(json!({"redis": {"url": redis_url}}))),
        )
        .await
        .expect("the fix applies");
    let fixed = wait(Duration::from_secs(90), || async {
        let status = fleets
            .get("chat")
            .await
            .ok()
            .and_then(|f| f.status)
            .unwrap_or_default();
        status.ready_replicas == 2
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "False")
    })
    .await;
    assert!(
        fixed,
        "fixing the spec resumes reconciling: {:?}",
        fleets.get("chat").await.ok().and_then(|f| f.status)
    );
    fleets
        .delete("chat", &DeleteParams::default())
        .await
        .expect("cleanup");
}

/// The objects of kind `K` matching `selector` in `ns`.
async fn list<K>(client: &kube::Client, ns: &str, selector: &ListParams) -> kube::Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Ok(Api::<K>::namespaced(client.clone(), ns)
        .list(selector)
        .await?
        .items)
}

/// The objects of kind `K` matching `selector` in `ns`; the test fails when they cannot be listed.
async fn owned<K>(client: &kube::Client, ns: &str, selector: &ListParams) -> Vec<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    list(client, ns, selector)
        .await
        .unwrap_or_else(|e| panic!("listing {}: {e}", K::kind(&())))
}

/// Whether no object of kind `K` matches `selector` in `ns` (an error counts as some left).
async fn none_left<K>(client: &kube::Client, ns: &str, selector: &ListParams) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    list::<K>(client, ns, selector)
        .await
        .is_ok_and(|items| items.is_empty())
}

/// `GET /healthz` on a pod address: the status code, or None when nothing answers in 2 s.
async fn healthz(ip: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((ip, 8080)).await.ok()?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

async fn a_wedged_operator_fails_liveness_and_is_restarted(cluster: &Cluster, redis_url: &str) {
    let pods = cluster.operator_pods().await;
    let ips: Vec<String> = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert_eq!(ips.len(), 2);
    for ip in &ips {
        assert_eq!(healthz(ip).await, Some(200), "healthy before");
    }
    let starts = |pod: &Pod| {
        cluster
            .kubelet
            .logs(cluster::OPERATOR_NS, &pod.name_any())
            .matches("wsfleet operator starting")
            .count()
    };
    let before: Vec<usize> = pods.iter().map(starts).collect();

    // The API server stops answering: calls in flight hang (kube sets no read timeout).
    cluster.plane.signal("kube-apiserver", libc::SIGSTOP);
    let failing = wait(Duration::from_secs(40), || async {
        for ip in &ips {
            if healthz(ip).await == Some(503) {
                return true;
            }
        }
        false
    })
    .await;
    let restarted = failing
        && wait(Duration::from_secs(90), || async {
            pods.iter().zip(&before).any(|(pod, n)| starts(pod) > *n)
        })
        .await;
    cluster.plane.signal("kube-apiserver", libc::SIGCONT);
    assert!(
        failing,
        "/healthz fails while the operator is wedged:\n{}",
        cluster.operator_logs().await
    );
    assert!(
        restarted,
        "the kubelet's liveness probe restarted a wedged replica:\n{}",
        cluster.operator_logs().await
    );

    // Back: the replicas are Ready, one leads, and reconciling works again.
    let recovered = wait(Duration::from_secs(90), || async {
        let pods = cluster.operator_pods().await;
        pods.len() == 2 && pods.iter().all(cluster::ready) && cluster.lease_holder().await.is_some()
    })
    .await;
    assert!(
        recovered,
        "the operator recovers:\n{}",
        cluster.operator_logs().await
    );
    let fleet = Fleet::create(cluster, "after-wedge", redis_url, json!({"replicas": 1})).await;
    assert!(
        fleet.until_serving(1, Duration::from_secs(90)).await,
        "a new fleet is served after the recovery:\n{}",
        cluster.operator_logs().await
    );
}

/// Applies `crds/websocketfleet.yaml` server-side and waits for it to be Established.
async fn install_crd(cluster: &Cluster) {
    let text = std::fs::read_to_string(repo().join("crds/websocketfleet.yaml")).expect("crds/");
    let crd: Value = serde_saphyr::from_str(&text).expect("the CRD parses");
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let name = crd["metadata"]["name"]
        .as_str()
        .expect("CRD name")
        .to_string();
    api.patch(&name, &PatchParams::apply("kubectl"), &Patch::Apply(&crd))
        .await
        .unwrap_or_else(|e| panic!("the API server refused the CRD: {e}"));
    let established = wait(Duration::from_secs(30), || async {
        api.get(&name)
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
    assert!(established, "the CRD becomes Established");
}

async fn crd_is_accepted_and_validates(cluster: &Cluster) {
    install_crd(cluster).await;
    let client = cluster.plane.namespace("examples").await;
    let fleets: Api<WebSocketFleet> = Api::namespaced(client.clone(), "examples");

    // Every example applies server-side, with strict field validation (unknown fields fail).
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(repo().join("examples")).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("example");
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("example YAML");
            for doc in docs.into_iter().filter(|d| d["kind"] == "WebSocketFleet") {
                examples.push((path.clone(), doc));
            }
        }
    }
    assert!(
        examples.len() >= 3,
        "examples/ has the fleets the docs cite"
    );
    let mut namespaces = std::collections::BTreeSet::from(["examples".to_string()]);
    for (path, doc) in &examples {
        let name = doc["metadata"]["name"].as_str().expect("example name");
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("examples");
        if namespaces.insert(ns.to_string()) {
            cluster.plane.namespace(ns).await;
        }
        let mut params = PatchParams::apply("kubectl");
        params.field_validation = Some(kube::api::ValidationDirective::Strict);
        Api::<WebSocketFleet>::namespaced(client.clone(), ns)
            .patch(name, &params, &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("{} was refused: {e}", path.display()));
    }

    // Invalid specs, refused by the schema or CEL with the documented messages.
    let doc = std::fs::read_to_string(repo().join("docs/crd-reference.md")).expect("docs");
    let crd_text = std::fs::read_to_string(repo().join("crds/websocketfleet.yaml")).expect("crd");
    let valid = json!({"image": "gw:1", "auth": {"anonymous": true}});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "both-auth",
            json!({"auth": {"anonymous": true, "jwt": {"keySecretRef": {"name": "k", "key": "k"}}}}),
            "set auth.jwt, or auth.anonymous: true for development (not both)",
        ),
        (
            "no-auth",
            json!({"auth": {"anonymous": false}}),
            "set auth.jwt, or auth.anonymous: true for development (not both)",
        ),
        (
            "min-above-max",
            json!({"autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}}),
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            "target-above-cap",
            json!({"connections": {"maxPerNode": 1000},
                   "autoscaling": {"enabled": true, "targetConnectionsPerNode": 2000}}),
            "autoscaling.targetConnectionsPerNode must not exceed connections.maxPerNode",
        ),
        (
            "short-timeout",
            json!({"drain": {"reconnectWindowSeconds": 120, "timeoutSeconds": 60}}),
            "drain.timeoutSeconds must be at least drain.reconnectWindowSeconds",
        ),
        (
            "heartbeat",
            json!({"connections": {"heartbeatIntervalSeconds": 30, "heartbeatTimeoutSeconds": 10}}),
            "heartbeatTimeoutSeconds must be greater than heartbeatIntervalSeconds",
        ),
        (
            "two-redis-sources",
            json!({"backplane": {"redis": {"url": "redis://r:6379",
                   "secretRef": {"name": "r", "key": "url"}}}}),
            "set exactly one of backplane.redis.url or backplane.redis.secretRef",
        ),
        (
            "negative-replicas",
            json!({"replicas": -1}),
            "spec.replicas: Invalid value",
        ),
        (
            "not-redis",
            json!({"backplane": {"redis": {"url": "http://r:6379"}}}),
            "spec.backplane.redis.url",
        ),
        (
            "a-fleet-name-that-is-far-too-long-for-node-names-to-stay-valid",
            json!({}),
            "the fleet name must be a DNS label of at most 47 characters",
        ),
    ];
    for (name, extra, message) in cases {
        let mut spec = valid.clone();
        cluster::merge(&mut spec, extra);
        let body = json!({
            "apiVersion": "wsfleet.io/v1alpha1", "kind": "WebSocketFleet",
            "metadata": {"name": name}, "spec": spec,
        });
        let refused = fleets
            .patch(name, &PatchParams::apply("kubectl"), &Patch::Apply(&body))
            .await
            .expect_err(&format!("{name}: an invalid spec is refused"));
        let kube::Error::Api(status) = &refused else {
            panic!("{name}: not an API refusal: {refused}");
        };
        assert_eq!(status.code, 422, "{name}: {status:?}");
        assert!(
            status.message.contains(message),
            "{name}: the API server says {:?}, not {message:?}",
            status.message
        );
        let first_words: String = message.chars().take(40).collect();
        assert!(
            doc.contains(&first_words)
                || crd_text.contains(&first_words)
                || message.starts_with("spec."),
            "{name}: docs/crd-reference.md shows the message {message:?}"
        );
    }
    for (_, doc) in &examples {
        let name = doc["metadata"]["name"].as_str().expect("name");
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("examples");
        Api::<WebSocketFleet>::namespaced(client.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
            .expect("deleting an example");
    }
}

async fn fleet_becomes_ready_and_is_collected(cluster: &Cluster, redis_url: &str) {
    let fleet = Fleet::create(cluster, "lifecycle", redis_url, json!({"replicas": 3})).await;
    let up = fleet.until_serving(3, Duration::from_secs(120)).await;
    assert!(up, "three nodes serve:\n{}", cluster.operator_logs().await);

    // Clients through the Service (the real EndpointSlices), so Connections is real.
    let service = fleet.service().await;
    assert!(
        wait(Duration::from_secs(30), || async {
            service.endpoints().len() == 3
        })
        .await,
        "the client Service has three Ready endpoints: {:?}",
        service.endpoints()
    );
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(
            wsfleet_client::Client::connect(&service.url(), None)
                .await
                .expect("a client connects through the Service"),
        );
    }
    // Connections change no Kubernetes object, so the operator counts them at its periodic
    // resync (60 s): wait past one.
    let ready = wait(Duration::from_secs(90), || async {
        let status = fleet.get().await.status.unwrap_or_default();
        status.ready_replicas == 3
            && status.desired_replicas == 3
            && status.connections == 6
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
    .await;
    let status = fleet.get().await.status;
    assert!(
        ready,
        "the fleet reports 3/3 Ready and 6 connections: {status:#?}"
    );

    // `kubectl get wsf` prints the real values.
    let table = cluster.kubectl(&["get", "wsf", "-n", "lifecycle", "chat"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| row.get(i).copied())
            .unwrap_or_else(|| panic!("no {name} column in:\n{table}"))
    };
    assert_eq!(column("DESIRED"), "3", "{table}");
    assert_eq!(column("READY"), "3", "{table}");
    assert_eq!(column("CONNECTIONS"), "6", "{table}");

    // Events, and owner references on everything the operator made.
    let events: Api<Event> = Api::namespaced(fleet.client.clone(), "lifecycle");
    let events = events.list(&ListParams::default()).await.expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.involved_object.name.as_deref() == Some("chat")),
        "the operator records events on the fleet"
    );
    let uid = fleet.get().await.uid().expect("fleet uid");
    let owned_by_fleet =
        |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            refs.iter()
                .any(|r| r.uid == uid && r.controller == Some(true) && r.kind == "WebSocketFleet")
        };
    let selector = ListParams::default().labels("wsfleet.io/fleet=chat");
    let ns = "lifecycle";
    let c = &fleet.client;
    let pods = owned::<Pod>(c, ns, &selector).await;
    let services = owned::<Service>(c, ns, &selector).await;
    let maps = owned::<ConfigMap>(c, ns, &selector).await;
    let budgets = owned::<PodDisruptionBudget>(c, ns, &selector).await;
    let secrets: Api<Secret> = Api::namespaced(fleet.client.clone(), ns);
    let mut tokens = Vec::new();
    for name in ["chat-drain-token", "chat-publish-token"] {
        tokens.push(secrets.get(name).await.expect("token secret"));
    }
    assert_eq!((pods.len(), services.len(), budgets.len()), (3, 2, 1));
    assert!(!maps.is_empty());
    for refs in pods
        .iter()
        .map(|o| o.owner_references())
        .chain(services.iter().map(|o| o.owner_references()))
        .chain(maps.iter().map(|o| o.owner_references()))
        .chain(budgets.iter().map(|o| o.owner_references()))
        .chain(tokens.iter().map(|o| o.owner_references()))
    {
        assert!(owned_by_fleet(refs), "owned by the fleet: {refs:?}");
    }
    drop(clients);

    // Deleting the fleet: the garbage collector removes what it owned.
    fleet
        .api()
        .delete("chat", &DeleteParams::default())
        .await
        .expect("deleting the fleet");
    let collected = wait(Duration::from_secs(120), || async {
        let c = &fleet.client;
        none_left::<Pod>(c, ns, &selector).await
            && none_left::<Service>(c, ns, &selector).await
            && none_left::<ConfigMap>(c, ns, &selector).await
            && none_left::<PodDisruptionBudget>(c, ns, &selector).await
            && none_left::<Secret>(c, ns, &selector).await
    })
    .await;
    assert!(
        collected,
        "garbage collection removed the fleet's pods, Services, ConfigMaps, PDB and Secrets"
    );
}
