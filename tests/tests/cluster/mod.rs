//! The harness of the operator's scenarios on a real control plane: etcd, kube-apiserver and
//! kube-controller-manager ([`wsfleet_tests::cluster`]), the process kubelet, the operator
//! installed with `helm install charts/wsfleet` (two replicas, leader election, the chart's RBAC),
//! real Redis, gateway processes and Rust clients.
//!
//! What the scenarios check on top: a watch on the fleet's pods records the most pods and the
//! most draining nodes seen at once and any pod deleted without having been drained
//! ([`Record`]); a stand-in for kube-proxy forwards each client connection to a Ready endpoint
//! of the fleet's client Service, read from the EndpointSlices the controller-manager writes.

// Each scenario is its own test binary and uses part of the harness.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use wsfleet_operator::crd::WebSocketFleet;
use wsfleet_tests::cluster::ControlPlane;
use wsfleet_tests::cluster::kubelet::Kubelet;

/// Where the chart installs the operator.
pub const OPERATOR_NS: &str = "wsfleet-system";
/// The label the operator puts on a node it is draining.
pub const DRAINING_LABEL: &str = "wsfleet.io/draining";
/// The gateway image: the process kubelet runs `target/<profile>/wsfleet-gateway` for it.
pub const GATEWAY_IMAGE: &str = "ghcr.io/wsfleet/wsfleet-gateway:0.1.0";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A control plane, its kubelet and an admin client.
pub struct Cluster {
    pub client: Client,
    pub kubelet: Kubelet,
    pub plane: ControlPlane,
}

impl Cluster {
    /// A control plane with `machines` Nodes run by the process kubelet.
    pub async fn start(machines: usize) -> Cluster {
        let plane = ControlPlane::start().await;
        let kubelet = Kubelet::start(&plane, machines).await;
        let client = plane.client().await;
        Cluster {
            client,
            kubelet,
            plane,
        }
    }

    /// Runs `helm` against this cluster; panics with its output when it fails.
    pub fn helm(&self, args: &[&str]) -> String {
        let output = Command::new("helm")
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.plane.kubeconfig)
            .env(
                "HELM_CACHE_HOME",
                self.plane.kubeconfig.with_extension("helm-cache"),
            )
            .env(
                "HELM_CONFIG_HOME",
                self.plane.kubeconfig.with_extension("helm-config"),
            )
            .env(
                "HELM_DATA_HOME",
                self.plane.kubeconfig.with_extension("helm-data"),
            )
            .output()
            .expect("running helm (./scripts/test installs it when missing)");
        assert!(
            output.status.success(),
            "helm {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs the real `kubectl` against this cluster; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = Command::new("kubectl")
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.plane.kubeconfig)
            .output()
            .expect("running kubectl (./scripts/test installs it when missing)");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Installs the operator as a user does (`helm install charts/wsfleet`, two replicas) and
    /// waits until both replicas are Ready and one holds the Lease. `extra` are more helm
    /// arguments (`--set x=y`, `--skip-crds`).
    pub async fn install_operator(&self, extra: &[&str]) {
        let chart = repo().join("charts/wsfleet");
        let mut args = vec![
            "install",
            "wsfleet",
            chart.to_str().expect("UTF-8 path"),
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
            "--set",
            "image.repository=ghcr.io/wsfleet/wsfleet-operator",
            "--set",
            "image.tag=test",
            "--set",
            "logFormat=text",
            "--set",
            "logLevel=info,wsfleet_operator=debug",
        ];
        args.extend(extra);
        self.helm(&args);
        let ready = wait(Duration::from_secs(120), || async {
            let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), OPERATOR_NS);
            let ready = deployments
                .get_opt("wsfleet")
                .await
                .ok()
                .flatten()
                .and_then(|d| d.status)
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            ready == 2 && self.lease_holder().await.is_some()
        })
        .await;
        let logs = self.operator_logs().await;
        assert!(
            ready,
            "the operator's two replicas became Ready and one leads:\n{logs}"
        );
        assert!(
            logs.contains("became leader"),
            "the operator's logs reach the test:\n{logs}"
        );
    }

    /// The pods of the operator's Deployment.
    pub async fn operator_pods(&self) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), OPERATOR_NS)
            .list(&ListParams::default().labels("app.kubernetes.io/name=wsfleet"))
            .await
            .expect("listing the operator's pods")
            .items
    }

    /// Who holds the operator's Lease.
    pub async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NS);
        let lease = leases.get_opt("wsfleet-operator").await.ok()??;
        let holder = lease.spec?.holder_identity?;
        (!holder.is_empty()).then_some(holder)
    }

    /// Every operator replica's log, one after the other.
    pub async fn operator_logs(&self) -> String {
        let mut text = String::new();
        for pod in self.operator_pods().await {
            text.push_str(&format!("--- {} ---\n", pod.name_any()));
            text.push_str(&self.kubelet.logs(OPERATOR_NS, &pod.name_any()));
        }
        text
    }

    /// Fails when the operator was refused anything: its RBAC must cover every call it makes.
    pub async fn assert_operator_never_forbidden(&self) {
        let logs = self.operator_logs().await;
        let forbidden: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("Forbidden") || l.contains("forbidden"))
            .collect();
        assert!(
            forbidden.is_empty(),
            "the operator was refused by RBAC:\n{}",
            forbidden.join("\n")
        );
    }
}

/// Polls `check` every 200 ms until true or `limit` passes.
pub async fn wait<F, Fut>(limit: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Merges `extra` into `base`, objects key by key.
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// One fleet in its own namespace.
pub struct Fleet {
    pub client: Client,
    pub namespace: String,
    pub name: String,
}

impl Fleet {
    /// A fleet on Redis at `redis_url` with what the scenarios share (anonymous clients, short
    /// drain windows, one node draining at a time) and the scenario's `extra` spec fields,
    /// applied (server-side, as `kubectl apply --server-side`) in a new namespace.
    pub async fn create(
        cluster: &Cluster,
        namespace: &str,
        redis_url: &str,
        extra: Value,
    ) -> Fleet {
        let client = cluster.plane.namespace(namespace).await;
        let mut spec = json!({
            "image": GATEWAY_IMAGE,
            "auth": {"anonymous": true},
            "backplane": {"redis": {"url": redis_url}},
            "connections": {"heartbeatIntervalSeconds": 5},
            "drain": {"reconnectWindowSeconds": 2, "timeoutSeconds": 30, "maxUnavailable": 1},
        });
        merge(&mut spec, extra);
        let fleet = Fleet {
            client,
            namespace: namespace.into(),
            name: "chat".into(),
        };
        fleet.apply(spec).await;
        fleet
    }

    /// A fleet of `nodes` replicas, once they all serve and the Service lists them, with
    /// `clients` subscribers and a publisher through the Service.
    pub async fn under_load(
        cluster: &Cluster,
        namespace: &str,
        redis_url: &str,
        nodes: usize,
        clients: usize,
    ) -> (Fleet, ServiceProxy, Load) {
        let fleet = Fleet::create(cluster, namespace, redis_url, json!({"replicas": nodes})).await;
        assert!(
            fleet.until_serving(nodes, Duration::from_secs(120)).await,
            "{namespace}: {nodes} nodes serve:\n{}",
            cluster.operator_logs().await
        );
        let service = fleet.service().await;
        let listed = wait(Duration::from_secs(30), || async {
            service.endpoints().len() == nodes
        })
        .await;
        assert!(
            listed,
            "{namespace}: the Service lists {nodes} Ready endpoints"
        );
        let load = Load::start(&service.url(), clients).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        (fleet, service, load)
    }

    pub fn api(&self) -> Api<WebSocketFleet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Server-side applies `spec` as the whole spec (field manager `kubectl`).
    pub async fn apply(&self, spec: Value) {
        let body = json!({
            "apiVersion": "wsfleet.io/v1alpha1",
            "kind": "WebSocketFleet",
            "metadata": { "name": self.name },
            "spec": spec,
        });
        self.api()
            .patch(
                &self.name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap_or_else(|e| panic!("applying the fleet: {e}"));
    }

    /// Merge-patches the spec (as `kubectl patch --type merge`).
    pub async fn patch_spec(&self, spec: Value) {
        self.api()
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .unwrap_or_else(|e| panic!("patching the fleet: {e}"));
    }

    pub async fn get(&self) -> WebSocketFleet {
        self.api().get(&self.name).await.expect("getting the fleet")
    }

    /// The fleet's pods.
    pub async fn pods(&self) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(&format!("wsfleet.io/fleet={}", self.name)))
            .await
            .expect("listing pods")
            .items
    }

    /// Waits (at most `limit`) until exactly `nodes` pods exist and all serve.
    pub async fn until_serving(&self, nodes: usize, limit: Duration) -> bool {
        wait(limit, || async {
            let pods = self.pods().await;
            pods.len() == nodes && pods.iter().all(serving)
        })
        .await
    }

    /// The names of the pods that serve.
    pub async fn serving_nodes(&self) -> Vec<String> {
        self.pods()
            .await
            .iter()
            .filter(|p| serving(p))
            .map(|p| p.name_any())
            .collect()
    }

    /// A kube-proxy stand-in for the fleet's client Service.
    pub async fn service(&self) -> ServiceProxy {
        ServiceProxy::start(self.client.clone(), &self.namespace, &self.name).await
    }

    /// Starts recording what happens to the fleet's pods.
    pub fn record(&self) -> Recorder {
        Recorder::start(self.client.clone(), &self.namespace, &self.name)
    }
}

/// Whether a pod is Ready and not being drained or deleted.
pub fn serving(pod: &Pod) -> bool {
    ready(pod)
        && !pod.labels().contains_key(DRAINING_LABEL)
        && pod.metadata.deletion_timestamp.is_none()
}

/// Whether a pod's Ready condition is True.
pub fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The revision label of a pod.
pub fn revision(pod: &Pod) -> String {
    pod.labels()
        .get("wsfleet.io/revision")
        .cloned()
        .unwrap_or_default()
}

/// What a watch on the fleet's pods saw.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Most pods of the fleet at once that are not terminating.
    pub max_pods: usize,
    /// Most pods at once that the operator is draining (labelled, not yet terminating).
    pub max_draining: usize,
    /// Most pods at once on their way out: draining or terminating.
    pub max_leaving: usize,
    /// Pods that were Ready and began terminating without having been drained first.
    pub deleted_undrained: Vec<String>,
    /// Every pod seen, with its revision.
    pub seen: BTreeMap<String, String>,
    /// The order in which pods began terminating.
    pub terminated: Vec<String>,
    /// Fewest pods serving (Ready, not draining, not terminating) at once since recording began.
    pub min_serving: usize,
    /// When a pod first started to leave (draining or terminating).
    pub first_leaving: Option<tokio::time::Instant>,
}

/// Records a [`Record`] from a watch until dropped.
pub struct Recorder {
    record: Arc<Mutex<Record>>,
    task: JoinHandle<()>,
}

impl Recorder {
    fn start(client: Client, namespace: &str, fleet: &str) -> Recorder {
        let record: Arc<Mutex<Record>> = Arc::default();
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(&format!("wsfleet.io/fleet={fleet}"));
        let shared = record.clone();
        if let Ok(mut r) = record.lock() {
            r.min_serving = usize::MAX;
        }
        let task = tokio::spawn(async move {
            let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
            let mut listed = false;
            let mut events = watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => listed = true,
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        let name = pod.name_any();
                        let before = pods.insert(name.clone(), pod.clone());
                        let Ok(mut record) = shared.lock() else {
                            return;
                        };
                        record.seen.insert(name.clone(), revision(&pod));
                        let began_terminating = pod.metadata.deletion_timestamp.is_some()
                            && before
                                .as_ref()
                                .is_none_or(|b| b.metadata.deletion_timestamp.is_none());
                        if began_terminating {
                            record.terminated.push(name.clone());
                            let drained = pod.labels().contains_key(DRAINING_LABEL);
                            let served = before.as_ref().is_some_and(ready);
                            if served && !drained {
                                record.deleted_undrained.push(name);
                            }
                        }
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        pods.remove(&pod.name_any());
                    }
                    _ => {}
                }
                let Ok(mut record) = shared.lock() else {
                    return;
                };
                let terminating = |p: &Pod| p.metadata.deletion_timestamp.is_some();
                let labelled = |p: &Pod| p.labels().contains_key(DRAINING_LABEL);
                let count = |f: &dyn Fn(&Pod) -> bool| pods.values().filter(|p| f(p)).count();
                record.max_pods = record.max_pods.max(count(&|p| !terminating(p)));
                record.max_draining = record
                    .max_draining
                    .max(count(&|p| labelled(p) && !terminating(p)));
                let leaving = count(&|p| labelled(p) || terminating(p));
                record.max_leaving = record.max_leaving.max(leaving);
                if leaving > 0 && record.first_leaving.is_none() {
                    record.first_leaving = Some(tokio::time::Instant::now());
                }
                if listed {
                    let serving = pods.values().filter(|p| serving(p)).count();
                    record.min_serving = record.min_serving.min(serving);
                }
            }
        });
        Recorder { record, task }
    }

    /// What was recorded so far.
    pub fn get(&self) -> Record {
        self.record.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stand-in for kube-proxy in front of one fleet's client Service: a loopback listener that
/// forwards each new connection to the next Ready endpoint (round robin), as listed in the
/// Service's EndpointSlices.
pub struct ServiceProxy {
    pub addr: SocketAddr,
    endpoints: Arc<Mutex<Vec<SocketAddr>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServiceProxy {
    async fn start(client: Client, namespace: &str, service: &str) -> ServiceProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the service proxy");
        let addr = listener.local_addr().expect("proxy address");
        let endpoints: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let pick = endpoints.clone();
        let forward = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = {
                    let Ok(list) = pick.lock() else { return };
                    next = next.wrapping_add(1);
                    (!list.is_empty()).then(|| list[next % list.len()])
                };
                let Some(target) = target else { continue };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let config =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let fill = endpoints.clone();
        let watch = tokio::spawn(async move {
            let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
            let mut events = watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                        slices.insert(s.name_any(), s);
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        slices.remove(&s.name_any());
                    }
                    _ => continue,
                }
                let ready: Vec<SocketAddr> = slices.values().flat_map(ready_addresses).collect();
                if let Ok(mut list) = fill.lock() {
                    *list = ready;
                }
            }
        });
        ServiceProxy {
            addr,
            endpoints,
            tasks: vec![forward, watch],
        }
    }

    /// `ws://…/ws` through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The Ready endpoints the proxy forwards to now.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.endpoints.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The ready address:port pairs of an EndpointSlice's `ws` port.
fn ready_addresses(slice: &EndpointSlice) -> Vec<SocketAddr> {
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("ws"))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// Real clients under load: subscribers through the Service and one publisher, all with the
/// Rust client (reconnects with jitter, obeys reconnect hints, resumes by offset).
pub struct Load {
    subscribers: Vec<(wsfleet_client::Client, wsfleet_client::Subscription)>,
    published: Arc<Mutex<BTreeSet<u64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    publishing: JoinHandle<()>,
    /// When each subscriber reconnected (its `Connected` events after the first).
    reconnects: Arc<Mutex<Vec<tokio::time::Instant>>>,
    /// The delays of the reconnect hints subscribers were given by draining nodes.
    hints: Arc<Mutex<Vec<Duration>>>,
    watchers: Vec<JoinHandle<()>>,
}

impl Drop for Load {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

impl Load {
    /// `clients` subscribers of channel `load` through `url`, and a publisher sending one
    /// message every 50 ms until stopped.
    pub async fn start(url: &str, clients: usize) -> Load {
        use wsfleet_client::{Client, ClientConfig};
        let config = |endpoints: Vec<String>| {
            ClientConfig::new(endpoints)
                .backoff(Duration::from_millis(50), Duration::from_millis(500))
        };
        let mut subscribers = Vec::new();
        let reconnects: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
        let hints: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let mut watchers = Vec::new();
        for _ in 0..clients {
            let client = Client::connect_with(config(vec![url.to_string()]))
                .await
                .expect("client connects");
            let subscription = client.subscribe("load").await.expect("subscribe");
            let mut events = client.events();
            let times = reconnects.clone();
            let delays = hints.clone();
            watchers.push(tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match events.recv().await {
                        Ok(wsfleet_client::Event::Connected { .. }) => {
                            if let Ok(mut times) = times.lock() {
                                times.push(tokio::time::Instant::now());
                            }
                        }
                        Ok(wsfleet_client::Event::Draining { after, .. }) => {
                            if let Ok(mut delays) = delays.lock() {
                                delays.push(after);
                            }
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    }
                }
            }));
            subscribers.push((client, subscription));
        }
        let publisher = Client::connect_with(config(vec![url.to_string()]))
            .await
            .expect("publisher connects");
        let published: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let publishing = {
            let published = published.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                for seq in 0..100_000u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    // A publish that fails while the publisher moves is retried (bounded).
                    for _ in 0..50 {
                        match publisher.publish("load", json!({ "seq": seq })).await {
                            Ok(ack) => {
                                if let Some(offset) = ack.offset
                                    && let Ok(mut published) = published.lock()
                                {
                                    published.insert(offset);
                                }
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Load {
            subscribers,
            published,
            stop,
            publishing,
            reconnects,
            hints,
            watchers,
        }
    }

    /// The reconnect hints received so far: how many, and how many distinct delays.
    pub fn hints(&self) -> (usize, usize) {
        let Ok(hints) = self.hints.lock() else {
            return (0, 0);
        };
        let distinct: BTreeSet<Duration> = hints.iter().copied().collect();
        (hints.len(), distinct.len())
    }

    /// How many reconnects happened, and the most in any one second.
    pub fn reconnect_peak(&self) -> (usize, usize) {
        let Ok(times) = self.reconnects.lock() else {
            return (0, 0);
        };
        let mut times = times.clone();
        times.sort();
        // The widest count of reconnects within any one-second window.
        let mut peak = 0;
        let mut first = 0;
        for (last, t) in times.iter().enumerate() {
            while t.duration_since(times[first]) >= Duration::from_secs(1) {
                first += 1;
            }
            peak = peak.max(last + 1 - first);
        }
        (times.len(), peak)
    }

    /// The node each subscriber is on now.
    pub fn nodes(&self) -> Vec<String> {
        self.subscribers
            .iter()
            .map(|(c, _)| c.session().map(|s| s.node).unwrap_or_default())
            .collect()
    }

    /// Stops publishing and checks that every subscriber got every acknowledged message once
    /// and in order, and ended on one of `nodes`. Returns how many messages were published.
    pub async fn finish(mut self, nodes: &[String]) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (&mut self.publishing).await.expect("publisher task");
        let published = self.published.lock().expect("published").clone();
        let Some(&last) = published.last() else {
            panic!("nothing was published");
        };
        for (i, (client, subscription)) in self.subscribers.iter_mut().enumerate() {
            let mut received = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while received.last().is_none_or(|l| *l < last) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match tokio::time::timeout(left, subscription.recv()).await {
                    Ok(Some(message)) => received.push(message.offset),
                    _ => break,
                }
            }
            let got: BTreeSet<u64> = received.iter().copied().collect();
            let missing: Vec<&u64> = published.difference(&got).collect();
            assert!(missing.is_empty(), "client {i} lost {missing:?}");
            assert!(
                received.windows(2).all(|w| w[0] < w[1]),
                "client {i}: out of order or duplicated"
            );
            // A client told to move late may still be on its way (jittered reconnect).
            let settled = wait(Duration::from_secs(30), || async {
                client.session().is_some_and(|s| nodes.contains(&s.node))
            })
            .await;
            let node = client.session().map(|s| s.node).unwrap_or_default();
            assert!(settled, "client {i} ends on {node:?}, not on {nodes:?}");
        }
        published.len()
    }
}
