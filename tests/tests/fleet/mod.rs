//! The fleet harness: the operator's reconcile runs in a loop against the in-process fake
//! Kubernetes API (no watch), while real gateway processes stand in for pods. The harness plays
//! kubelet: a pod created in the API starts a gateway (`target/debug/wsfleet-gateway`) with the
//! pod name as node id, the fleet's admin token and the Redis URL; the pod becomes Running and
//! Ready once `/readyz` answers; a deleted pod's process gets SIGTERM; a process that exited
//! while its pod exists is started again (restart policy Always).
//!
//! Every step records what the invariants need: how many pods carried the drain label at once,
//! and whether each pod that disappeared had been drained.

// Each scenario is its own test binary and uses part of the harness.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_fake_client::ClientBuilder;
use serde_json::json;
use wsfleet_operator::crd::WebSocketFleet;
use wsfleet_operator::metrics::Metrics;
use wsfleet_operator::reconcile::{Context, reconcile};
use wsfleet_operator::resources::sysctl::KubeVersion;
use wsfleet_tests::Gateway;

pub const NS: &str = "prod";
pub const FLEET: &str = "chat";
const DRAINING_LABEL: &str = "wsfleet.io/draining";

/// The gateway binary next to this test executable (`target/debug/deps/..` → `target/debug`).
pub fn gateway_bin() -> String {
    let exe = std::env::current_exe().expect("test executable path");
    let bin: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("wsfleet-gateway"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p wsfleet-gateway` or `cargo test --workspace`)",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// A pod's process as the harness's kubelet runs it.
struct Process {
    gateway: Gateway,
}

/// What the harness saw over a scenario.
#[derive(Debug, Default)]
pub struct Record {
    /// Most pods labelled draining at the same time.
    pub max_draining: usize,
    /// Pods that disappeared without having been marked draining while running clients.
    pub deleted_undrained: Vec<String>,
    /// Every pod name ever seen, with the revision label.
    pub seen: BTreeMap<String, String>,
}

pub struct Fleet {
    pub client: kube::Client,
    ctx: Arc<Context>,
    redis_url: String,
    bin: String,
    processes: HashMap<String, Process>,
    /// Processes of deleted pods, draining after SIGTERM; killed on drop.
    stopping: Vec<Gateway>,
    addresses: Arc<Mutex<HashMap<String, std::net::SocketAddr>>>,
    last_pods: HashMap<String, Pod>,
    /// The client Service: forwards each new connection to a Ready node.
    service: Service,
    pub record: Record,
}

/// A stand-in for the client Service: a loopback TCP proxy that sends each new connection to
/// the next Ready node's WebSocket port (round robin), as kube-proxy would.
struct Service {
    addr: std::net::SocketAddr,
    endpoints: Arc<Mutex<Vec<std::net::SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start() -> Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the service");
        let addr = listener.local_addr().expect("service address");
        let endpoints: Arc<Mutex<Vec<std::net::SocketAddr>>> = Arc::default();
        let pick = endpoints.clone();
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = {
                    let list = pick.lock().expect("endpoints");
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
        Service {
            addr,
            endpoints,
            task,
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Merges `extra` into `base`, objects key by key (so a scenario can add one drain field).
fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

impl Fleet {
    /// A fleet on `redis` with what every scenario shares (anonymous clients, 2 s drain
    /// windows, one node draining at a time) plus the scenario's own `extra` spec fields.
    pub async fn on_redis(redis_url: &str, extra: serde_json::Value) -> Fleet {
        let mut spec = json!({
            "image": "gw:1",
            "auth": {"anonymous": true},
            "backplane": {"redis": {"url": redis_url}},
            "drain": {"reconnectWindowSeconds": 2, "timeoutSeconds": 30, "maxUnavailable": 1}
        });
        merge(&mut spec, extra);
        Fleet::new(spec, redis_url).await
    }

    /// Runs the operator until exactly `nodes` nodes serve (at most 90 s).
    pub async fn until_serving(&mut self, nodes: usize) -> bool {
        self.run_until(Duration::from_secs(90), |pods| {
            pods.len() == nodes && pods.iter().all(serving)
        })
        .await
    }

    pub async fn new(spec: serde_json::Value, redis_url: &str) -> Fleet {
        let mut fleet = WebSocketFleet::new(FLEET, serde_json::from_value(spec).expect("spec"));
        fleet.metadata.namespace = Some(NS.into());
        let client = ClientBuilder::new()
            .with_resource::<WebSocketFleet>()
            .with_status_subresource::<WebSocketFleet>()
            .with_status_subresource::<Pod>()
            .build()
            .await
            .expect("fake client");
        Api::<WebSocketFleet>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &fleet)
            .await
            .expect("create fleet");
        let addresses: Arc<Mutex<HashMap<String, std::net::SocketAddr>>> = Arc::default();
        let lookup = addresses.clone();
        let ctx = Context::new(
            client.clone(),
            Metrics::new().expect("metrics"),
            KubeVersion {
                major: 1,
                minor: 32,
            },
        )
        .with_admin_address(Arc::new(move |pod: &Pod| {
            lookup
                .lock()
                .ok()?
                .get(pod.metadata.name.as_deref()?)
                .copied()
        }))
        .with_gateway_timeout(Duration::from_secs(2));
        Fleet {
            client,
            ctx: Arc::new(ctx),
            redis_url: redis_url.into(),
            bin: gateway_bin(),
            processes: HashMap::new(),
            stopping: Vec::new(),
            addresses,
            last_pods: HashMap::new(),
            service: Service::start().await,
            record: Record::default(),
        }
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn fleet(&self) -> WebSocketFleet {
        Api::<WebSocketFleet>::namespaced(self.client.clone(), NS)
            .get(FLEET)
            .await
            .expect("get fleet")
    }

    pub async fn patch_spec(&self, spec: serde_json::Value) {
        Api::<WebSocketFleet>::namespaced(self.client.clone(), NS)
            .patch(
                FLEET,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .expect("patch spec");
    }

    pub async fn pods(&self) -> Vec<Pod> {
        self.pods_api()
            .list(&ListParams::default().labels(&format!("wsfleet.io/fleet={FLEET}")))
            .await
            .expect("list pods")
            .items
    }

    async fn token(&self) -> Option<String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), NS)
            .get_opt(&format!("{FLEET}-admin-token"))
            .await
            .expect("get secret")?;
        let bytes = secret.data?.get("token")?.0.clone();
        String::from_utf8(bytes).ok()
    }

    /// The client Service's WebSocket URL.
    pub fn service_url(&self) -> String {
        format!("ws://{}/ws", self.service.addr)
    }

    /// Process id of a pod's node (for SIGSTOP).
    pub fn pid(&self, pod: &str) -> Option<u32> {
        self.processes.get(pod).map(|p| p.gateway.pid())
    }

    /// One operator reconcile, then one kubelet pass; records the invariants.
    pub async fn step(&mut self) {
        let fleet = self.fleet().await;
        if let Err(e) = reconcile(Arc::new(fleet), self.ctx.clone()).await {
            eprintln!("reconcile failed (retried next step): {e}");
        }
        self.kubelet().await;
        self.observe().await;
    }

    async fn kubelet(&mut self) {
        let Some(token) = self.token().await else {
            return;
        };
        let pods = self.pods().await;
        let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        // Deleted pods: SIGTERM, the gateway drains itself and exits.
        let gone: Vec<String> = self
            .processes
            .keys()
            .filter(|name| !names.contains(name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(process) = self.processes.remove(&name) {
                signal(process.gateway.pid(), "-TERM");
                self.stopping.push(process.gateway);
            }
            self.addresses.lock().expect("addresses").remove(&name);
        }
        let mut endpoints = Vec::new();
        for pod in pods {
            let name = pod.name_any();
            let exited = self
                .processes
                .get(&name)
                .is_some_and(|p| !answers(p.gateway.admin_addr, "/healthz"));
            if exited && !stopped(self.processes.get(&name).map(|p| p.gateway.pid())) {
                // Exited after its drain: the kubelet restarts the container.
                self.processes.remove(&name);
            }
            if !self.processes.contains_key(&name) {
                let gateway = self.start(&name, &token);
                self.addresses
                    .lock()
                    .expect("addresses")
                    .insert(name.clone(), gateway.admin_addr);
                self.processes.insert(name.clone(), Process { gateway });
            }
            let ready = self
                .processes
                .get(&name)
                .is_some_and(|p| answers(p.gateway.admin_addr, "/readyz"));
            if ready && let Some(p) = self.processes.get(&name) {
                endpoints.push(p.gateway.ws_addr);
            }
            let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}
            ]}});
            let _ = self
                .pods_api()
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await;
        }
        *self.service.endpoints.lock().expect("endpoints") = endpoints;
    }

    fn start(&self, name: &str, token: &str) -> Gateway {
        tokio::task::block_in_place(|| {
            Gateway::start(
                &self.bin,
                &[],
                &[
                    ("NODE_ID", name),
                    ("WSFLEET_ANONYMOUS", "true"),
                    ("WSFLEET_ADMIN_TOKEN", token),
                    ("WSFLEET_REDIS_URL", &self.redis_url),
                    ("WSFLEET_HEARTBEAT_INTERVAL_SECS", "2"),
                ],
            )
        })
    }

    async fn observe(&mut self) {
        let pods = self.pods().await;
        let draining = pods
            .iter()
            .filter(|p| p.labels().contains_key(DRAINING_LABEL))
            .count();
        self.record.max_draining = self.record.max_draining.max(draining);
        let now: HashMap<String, Pod> = pods.into_iter().map(|p| (p.name_any(), p)).collect();
        for (name, before) in &self.last_pods {
            if !now.contains_key(name) && !before.labels().contains_key(DRAINING_LABEL) {
                self.record.deleted_undrained.push(name.clone());
            }
        }
        for (name, pod) in &now {
            let revision = pod
                .labels()
                .get("wsfleet.io/revision")
                .cloned()
                .unwrap_or_default();
            self.record.seen.insert(name.clone(), revision);
        }
        self.last_pods = now;
    }

    /// Steps every 300 ms until `done` holds for the fleet's pods, at most `limit`.
    pub async fn run_until(&mut self, limit: Duration, done: impl Fn(&[Pod]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            self.step().await;
            if done(&self.pods().await) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    }
}

/// Whether `GET path` answers 200 within a second (a stopped process does not).
fn answers(addr: std::net::SocketAddr, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Whether a process is stopped (SIGSTOP), from /proc: a stopped node is not restarted.
fn stopped(pid: Option<u32>) -> bool {
    pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s == "T"))
        })
        .unwrap_or(false)
}

/// Sends a signal with `kill(1)`.
pub fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// The revision label of a pod.
pub fn revision(pod: &Pod) -> String {
    pod.labels()
        .get("wsfleet.io/revision")
        .cloned()
        .unwrap_or_default()
}

/// Real clients under load: subscribers spread over the nodes and one publisher, all with the
/// Rust client (reconnects with jitter, obeys reconnect hints, resumes by offset).
pub struct Load {
    subscribers: Vec<(wsfleet_client::Client, wsfleet_client::Subscription)>,
    published: Arc<Mutex<std::collections::BTreeSet<u64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    publishing: tokio::task::JoinHandle<()>,
}

impl Load {
    /// `clients` subscribers of channel `load` through the Service at `url`, and a publisher
    /// sending one message every 50 ms until stopped.
    pub async fn start(url: &str, clients: usize) -> Load {
        use wsfleet_client::{Client, ClientConfig};
        let config = |endpoints: Vec<String>| {
            ClientConfig::new(endpoints)
                .backoff(Duration::from_millis(50), Duration::from_millis(500))
        };
        let mut subscribers = Vec::new();
        for _ in 0..clients {
            let client = Client::connect_with(config(vec![url.to_string()]))
                .await
                .expect("client connects");
            let subscription = client.subscribe("load").await.expect("subscribe");
            subscribers.push((client, subscription));
        }
        let publisher = Client::connect_with(config(vec![url.to_string()]))
            .await
            .expect("publisher connects");
        let published: Arc<Mutex<std::collections::BTreeSet<u64>>> = Arc::default();
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
                                if let Some(offset) = ack.offset {
                                    published.lock().expect("published").insert(offset);
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
        }
    }

    /// How many subscribers.
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Stops publishing and checks that every subscriber got every acknowledged message once
    /// and in order, and ended on one of `nodes`. Returns how many messages were published.
    pub async fn finish(mut self, nodes: &[String]) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.publishing.await.expect("publisher task");
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
            let got: std::collections::BTreeSet<u64> = received.iter().copied().collect();
            let missing: Vec<&u64> = published.difference(&got).collect();
            assert!(missing.is_empty(), "client {i} lost {missing:?}");
            assert!(
                received.windows(2).all(|w| w[0] < w[1]),
                "client {i}: out of order or duplicated"
            );
            let node = client.session().map(|s| s.node).unwrap_or_default();
            assert!(
                nodes.contains(&node),
                "client {i} ends on {node}, not on {nodes:?}"
            );
        }
        published.len()
    }
}

/// Whether a pod is Ready and not being drained.
pub fn serving(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && !pod.labels().contains_key(DRAINING_LABEL)
}
