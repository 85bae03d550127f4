//! A process kubelet: the one stand-in in the operator's tests. It does what a kubelet and a
//! container runtime do for the pods the tests care about, with processes instead of
//! containers:
//!
//! - registers its machines as Node objects, and binds pending pods to the schedulable machine
//!   with the fewest pods (`pods/binding`), since there is no scheduler;
//! - runs a pod's one container, whose image names a binary of this workspace
//!   (`*wsfleet-gateway*`, `*wsfleet-operator*`), as a process with the pod's args and env
//!   (field, Secret and ConfigMap references resolved); ConfigMap, Secret, emptyDir and
//!   projected service-account token volumes are written to a per-pod directory, and the
//!   process runs in a mount namespace of its own where each ConfigMap, Secret and projected
//!   volume is bind-mounted at its `mountPath`, so it reads the very paths its config names
//!   (the mount points are created, empty, on the host; emptyDir mounts are left out, the
//!   process uses the host's directory). Paths under a mount in args and env are also pointed
//!   at the per-pod directory, and a pod with a service-account token gets a kubeconfig that
//!   uses it (`KUBECONFIG`);
//! - refreshes Secret and ConfigMap volumes (not `subPath` mounts) every few seconds, each
//!   file replaced atomically as kubelet's atomic writer does, so a changed Secret reaches a
//!   running process;
//! - gives each pod its own address from 10.244.0.0/16, which the kernel treats as local on
//!   the loopback device (the API server refuses 127.0.0.0/8 in EndpointSlices), and stands in
//!   for the pod's network namespace by binding the wildcard address `0.0.0.0` of args and env
//!   to that address (and the gateway's listeners through `WSFLEET_LISTEN`,
//!   `WSFLEET_ADMIN_LISTEN` and `WSFLEET_API_LISTEN`, since its config file says `0.0.0.0`);
//! - keeps `status` true: phase, conditions, Ready from the readiness probe, restart counts and
//!   exit codes; restarts per `restartPolicy` (and on a failing liveness probe) with a short
//!   back-off (1 s doubling to 8 s, where a real kubelet starts at 10 s);
//! - deletes gracefully: SIGTERM, up to the pod's grace period, SIGKILL, then the API delete with
//!   grace 0.
//!
//! Init containers (the sysctl tuning) are recorded as completed, not run. Every process is
//! killed when the [`Kubelet`] drops.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, HTTPGetAction, Node, Pod, Probe, Secret, ServiceAccount, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ControlPlane, workspace_binary};
use crate::TempDir;

/// Where a service-account token is mounted in a pod, by convention.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The pod network: local on the loopback device.
const POD_NETWORK: &str = "10.244.0.0/16";
/// How often Secret and ConfigMap volumes are re-read (kubelet: about a minute; short here so
/// tests of a rotation do not wait).
const VOLUME_REFRESH: Duration = Duration::from_secs(2);
/// Longest wait for one API call made from a pod's probe loop.
const API_CALL_LIMIT: Duration = Duration::from_secs(3);

/// Which workspace binary an image runs, and the env vars that bind its listeners (by
/// container port name) when its own config names the wildcard address.
struct ImageRule {
    image_contains: &'static str,
    binary: &'static str,
    listeners: &'static [(&'static str, &'static str)],
}

const IMAGES: &[ImageRule] = &[
    ImageRule {
        image_contains: "wsfleet-gateway",
        binary: "wsfleet-gateway",
        listeners: &[
            ("ws", "WSFLEET_LISTEN"),
            ("admin", "WSFLEET_ADMIN_LISTEN"),
            ("api", "WSFLEET_API_LISTEN"),
        ],
    },
    ImageRule {
        image_contains: "wsfleet-operator",
        binary: "wsfleet-operator",
        listeners: &[],
    },
];

/// The kubelet of a set of machines (Nodes), running their pods as local processes.
pub struct Kubelet {
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    _dir: TempDir,
}

/// State the pod workers share with the kubelet.
struct Shared {
    client: Client,
    /// Machine name → its address.
    machines: BTreeMap<String, Ipv4Addr>,
    /// Pods this kubelet runs (by uid) → the machine they are on.
    placed: Mutex<HashMap<String, String>>,
    /// Free pod addresses.
    addresses: Mutex<BTreeSet<Ipv4Addr>>,
    /// Live process ids by pod (`namespace/name`), killed on drop whatever the tasks are doing.
    pids: Mutex<BTreeMap<String, i32>>,
    root: PathBuf,
    /// The pod workers and bindings, stopped with the kubelet.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The API server and its CA, for the kubeconfigs of pods with a service-account token.
    server: String,
    ca_cert: PathBuf,
}

impl Kubelet {
    /// Registers `machines` Nodes (`machine-1` …) and starts running pods bound to them.
    pub async fn start(plane: &ControlPlane, machines: usize) -> Kubelet {
        ensure_pod_network();
        let client = plane.client().await;
        // A /24 per test process, so two test binaries running at once never share an address.
        let subnet = u8::try_from(std::process::id() % 250).unwrap_or(0) + 1;
        let machines: BTreeMap<String, Ipv4Addr> = (1..=machines)
            .map(|i| {
                let host = u8::try_from(250 + i).expect("at most 5 machines");
                (format!("machine-{i}"), Ipv4Addr::new(10, 244, subnet, host))
            })
            .collect();
        let nodes: Api<Node> = Api::all(client.clone());
        for (name, ip) in &machines {
            register_node(&nodes, name, *ip).await;
        }
        let dir = TempDir::new("kubelet");
        let shared = Arc::new(Shared {
            client,
            machines,
            placed: Mutex::new(HashMap::new()),
            addresses: Mutex::new(
                (2..250)
                    .map(|h| Ipv4Addr::new(10, 244, subnet, h))
                    .collect(),
            ),
            pids: Mutex::new(BTreeMap::new()),
            root: dir.path().to_path_buf(),
            tasks: Mutex::new(Vec::new()),
            server: plane.server.clone(),
            ca_cert: plane.ca_cert.clone(),
        });
        let task = tokio::spawn(run(shared.clone()));
        Kubelet {
            task,
            shared,
            _dir: dir,
        }
    }

    /// Everything a pod's container wrote (stdout and stderr, across restarts).
    pub fn logs(&self, namespace: &str, pod: &str) -> String {
        std::fs::read_to_string(pod_dir(&self.shared.root, namespace, pod).join("container.log"))
            .unwrap_or_default()
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) to a pod's process, as a fault would; false when
    /// the pod has no process here.
    pub fn signal(&self, namespace: &str, pod: &str, signal: i32) -> bool {
        let pid = self
            .shared
            .pids
            .lock()
            .ok()
            .and_then(|p| p.get(&format!("{namespace}/{pod}")).copied());
        match pid {
            // SAFETY: kill(2) on a child this kubelet started and has not reaped.
            Some(pid) => unsafe { libc::kill(pid, signal) == 0 },
            None => false,
        }
    }

    /// The names of the machines.
    pub fn machines(&self) -> Vec<String> {
        self.shared.machines.keys().cloned().collect()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(tasks) = self.shared.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
        if let Ok(pids) = self.shared.pids.lock() {
            for pid in pids.values() {
                // SAFETY: kill(2) with a pid this kubelet started and has not reaped.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
    }
}

impl Shared {
    fn track(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task.abort_handle());
        }
    }
}

/// Makes 10.244.0.0/16 local on the loopback device (idempotent; needs CAP_NET_ADMIN, which
/// the project's machines and CI have).
fn ensure_pod_network() {
    let shown = std::process::Command::new("ip")
        .args(["route", "show", "table", "local", POD_NETWORK])
        .output()
        .expect("running ip(8) from iproute2");
    if !String::from_utf8_lossy(&shown.stdout).trim().is_empty() {
        return;
    }
    let added = std::process::Command::new("ip")
        .args([
            "route",
            "add",
            "local",
            POD_NETWORK,
            "dev",
            "lo",
            "table",
            "local",
        ])
        .output()
        .expect("running ip(8)");
    let err = String::from_utf8_lossy(&added.stderr);
    assert!(
        added.status.success() || err.contains("File exists"),
        "the process kubelet needs {POD_NETWORK} routed to the loopback device \
         (`ip route add local {POD_NETWORK} dev lo table local`, as root): {err}"
    );
}

async fn register_node(nodes: &Api<Node>, name: &str, ip: Ipv4Addr) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
    }))
    .expect("a Node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("registering Node {name}: {e}"));
    let status = json!({
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": ip.to_string() },
                { "type": "Hostname", "address": name },
            ],
            "capacity": { "cpu": "8", "memory": "32Gi", "pods": "110" },
            "allocatable": { "cpu": "8", "memory": "32Gi", "pods": "110" },
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "process kubelet is running",
                "lastHeartbeatTime": now(), "lastTransitionTime": now(),
            }],
            "nodeInfo": {
                "machineID": name, "systemUUID": name, "bootID": name,
                "kernelVersion": "", "osImage": "wsfleet process kubelet",
                "containerRuntimeVersion": "process://0", "kubeletVersion": "v1.37.2",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("writing the status of Node {name}: {e}"));
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Watches every pod: binds the unbound, hands each of ours to its worker.
async fn run(shared: Arc<Shared>) {
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let (pod, gone) = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => (pod, false),
            Ok(watcher::Event::Delete(pod)) => (pod, true),
            Ok(_) => continue,
            Err(e) => {
                eprintln!("process kubelet: pod watch: {e}");
                continue;
            }
        };
        let uid = pod.uid().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if gone {
            if let Some(worker) = workers.remove(&uid) {
                let _ = worker.send(None);
            }
            continue;
        }
        match node {
            None if pod.metadata.deletion_timestamp.is_none() => {
                shared.track(tokio::spawn(bind(shared.clone(), pod)));
            }
            Some(node) if shared.machines.contains_key(&node) => {
                if let Some(worker) = workers.get(&uid) {
                    let _ = worker.send(Some(pod));
                } else {
                    let (tx, rx) = watch::channel(Some(pod));
                    workers.insert(uid, tx);
                    shared.track(tokio::spawn(run_pod(shared.clone(), rx, node)));
                }
            }
            _ => {}
        }
        workers.retain(|_, worker| !worker.is_closed());
    }
}

/// Binds `pod` to the schedulable machine running the fewest pods.
async fn bind(shared: Arc<Shared>, pod: Pod) {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let Ok(list) = nodes.list(&ListParams::default()).await else {
        return;
    };
    let schedulable: Vec<String> = list
        .items
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .map(|n| n.name_any())
        .filter(|n| shared.machines.contains_key(n))
        .collect();
    let uid = pod.uid().unwrap_or_default();
    let machine = {
        let Ok(mut placed) = shared.placed.lock() else {
            return;
        };
        let count = |m: &String| placed.values().filter(|p| *p == m).count();
        let Some(machine) = schedulable.iter().min_by_key(|m| count(m)).cloned() else {
            return;
        };
        placed.insert(uid, machine.clone());
        machine
    };
    let api: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": { "name": pod.name_any() },
        "target": { "apiVersion": "v1", "kind": "Node", "name": machine },
    });
    let bound: Result<Value, _> = api
        .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
        .await;
    if let Err(e) = bound {
        eprintln!("process kubelet: binding {}: {e}", pod.name_any());
    }
}

fn pod_dir(root: &Path, namespace: &str, pod: &str) -> PathBuf {
    root.join(namespace).join(pod)
}

/// What the kubelet knows of a pod's one container, written into `status`.
#[derive(Debug, Clone, PartialEq)]
struct ContainerState {
    ready: bool,
    restarts: i32,
    /// Running since, or (exit code, reason) of the last exit when not running.
    running_since: Option<String>,
    last_exit: Option<(i32, String)>,
    /// Set when the pod ended for good (restart policy) or cannot run.
    phase: &'static str,
    message: Option<String>,
}

/// The life of one pod on this kubelet, until it is deleted.
async fn run_pod(shared: Arc<Shared>, mut updates: watch::Receiver<Option<Pod>>, machine: String) {
    let Some(pod) = updates.borrow().clone() else {
        return;
    };
    let uid = pod.uid().unwrap_or_default();
    if let Ok(mut placed) = shared.placed.lock() {
        placed.insert(uid.clone(), machine.clone());
    }
    let address = shared.addresses.lock().ok().and_then(|mut a| a.pop_first());
    let outcome = match address {
        Some(ip) => PodRun::new(&shared, &pod, ip, &machine).await,
        None => Err("the pod network is full".to_string()),
    };
    match outcome {
        Ok(mut run) => run.live(&mut updates).await,
        Err(message) => {
            let state = ContainerState {
                ready: false,
                restarts: 0,
                running_since: None,
                last_exit: None,
                phase: "Failed",
                message: Some(message),
            };
            let _ = write_status(&shared, &pod, None, &machine, &state, "").await;
            wait_for_deletion(&shared, &pod, &mut updates).await;
        }
    }
    if let Ok(mut placed) = shared.placed.lock() {
        placed.remove(&uid);
    }
    if let Some(ip) = address
        && let Ok(mut free) = shared.addresses.lock()
    {
        free.insert(ip);
    }
}

async fn wait_for_deletion(shared: &Shared, pod: &Pod, updates: &mut watch::Receiver<Option<Pod>>) {
    loop {
        let deleting = match updates.borrow().as_ref() {
            None => return,
            Some(p) => p.metadata.deletion_timestamp.is_some(),
        };
        if deleting {
            finish_delete(shared, pod).await;
            return;
        }
        if updates.changed().await.is_err() {
            return;
        }
    }
}

/// Removes the pod from the API once its processes are gone.
async fn finish_delete(shared: &Shared, pod: &Pod) {
    let api: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = api.delete(&pod.name_any(), &params).await;
}

/// A pod being run: its container spec resolved to a command line.
struct PodRun<'a> {
    shared: &'a Shared,
    pod: Pod,
    machine: String,
    ip: Ipv4Addr,
    container: Container,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    state: ContainerState,
    /// The last status write failed: write it again soon.
    unpublished: bool,
    init_containers: Vec<(String, String)>,
    /// The pod's volumes and where their files are here.
    volumes: Vec<(Volume, PathBuf)>,
    /// (mountPath, host path) bind-mounted in the process's mount namespace.
    binds: Vec<(String, PathBuf)>,
}

impl<'a> PodRun<'a> {
    async fn new(
        shared: &'a Shared,
        pod: &Pod,
        ip: Ipv4Addr,
        machine: &str,
    ) -> Result<PodRun<'a>, String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let [container] = spec.containers.as_slice() else {
            return Err("the process kubelet runs pods of exactly one container".into());
        };
        let image = container.image.clone().unwrap_or_default();
        let rule = IMAGES
            .iter()
            .find(|r| image.contains(r.image_contains))
            .ok_or_else(|| format!("image {image} names no binary of this workspace"))?;
        let namespace = pod.namespace().unwrap_or_default();
        let dir = pod_dir(&shared.root, &namespace, &pod.name_any());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

        // Volumes, then each mount's path inside the "container" → where it is here.
        let mut volumes = Vec::new();
        for volume in spec.volumes.iter().flatten() {
            let path = dir.join("volumes").join(&volume.name);
            write_volume(shared, pod, volume, &path).await?;
            volumes.push((volume.clone(), path));
        }
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        let mut binds: Vec<(String, PathBuf)> = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let (volume, source) = volumes
                .iter()
                .find(|(v, _)| v.name == mount.name)
                .ok_or_else(|| format!("mount of unknown volume {}", mount.name))?;
            let source = match &mount.sub_path {
                Some(sub) if !sub.is_empty() => source.join(sub),
                _ => source.clone(),
            };
            if volume.empty_dir.is_none() {
                binds.push((mount.mount_path.clone(), source.clone()));
            }
            mounts.push((mount.mount_path.clone(), source));
        }
        // Parents before the mounts nested in them.
        binds.sort_by_key(|(path, _)| path.len());
        // The longest mount path first, so nested mounts win.
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let localize = |value: &str| -> String {
            let mut value = value.replace("0.0.0.0:", &format!("{ip}:"));
            for (path, source) in &mounts {
                if let Some(rest) = value.strip_prefix(path.as_str())
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    value = format!("{}{rest}", source.display());
                    break;
                }
            }
            value
        };

        let mut env: Vec<(String, String)> = Vec::new();
        for var in container.env.iter().flatten() {
            if let Some(value) = env_value(shared, pod, var, ip, machine).await? {
                let value = localize(&expand(&value, &env));
                env.push((var.name.clone(), value));
            }
        }
        for (port_name, var) in rule.listeners {
            let port = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(port_name))
                .ok_or_else(|| format!("no container port named {port_name}"))?;
            env.push((var.to_string(), format!("{ip}:{}", port.container_port)));
        }
        if let Some((_, token_dir)) = mounts.iter().find(|(p, _)| p == SERVICE_ACCOUNT_DIR) {
            let kubeconfig = dir.join("kubeconfig");
            let text = super::kubeconfig(
                &shared.server,
                &shared.ca_cert,
                &format!("tokenFile: {}", token_dir.join("token").display()),
            );
            std::fs::write(&kubeconfig, text).map_err(|e| e.to_string())?;
            env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        }
        let args = container
            .command
            .iter()
            .flatten()
            .skip(1) // the image's binary is the entry point
            .chain(container.args.iter().flatten())
            .map(|a| localize(&expand(a, &env)))
            .collect();
        let init_containers = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect();
        Ok(PodRun {
            shared,
            pod: pod.clone(),
            machine: machine.to_string(),
            ip,
            container: container.clone(),
            binary: workspace_binary(rule.binary),
            args,
            env,
            log: dir.join("container.log"),
            state: ContainerState {
                ready: false,
                restarts: 0,
                running_since: None,
                last_exit: None,
                phase: "Pending",
                message: None,
            },
            unpublished: false,
            init_containers,
            volumes,
            binds,
        })
    }

    /// The command that runs the container's binary: in a mount namespace of its own with the
    /// pod's volumes bind-mounted, when it has any (the mount points are made on the host).
    fn command(&self) -> Result<tokio::process::Command, String> {
        if self.binds.is_empty() {
            let mut command = tokio::process::Command::new(&self.binary);
            command.args(&self.args);
            return Ok(command);
        }
        let mut script = String::from("set -e\n");
        for (target, source) in &self.binds {
            let target = Path::new(target);
            if source.is_dir() {
                std::fs::create_dir_all(target)
            } else {
                target
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(target)
                            .map(drop)
                    })
            }
            .map_err(|e| format!("mount point {}: {e}", target.display()))?;
            script.push_str(&format!(
                "mount --bind '{}' '{}'\n",
                source.display(),
                target.display()
            ));
        }
        script.push_str("exec \"$0\" \"$@\"\n");
        let mut command = tokio::process::Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script)
            .arg(&self.binary)
            .args(&self.args);
        Ok(command)
    }

    /// Re-reads the pod's Secret and ConfigMap volumes into their files. A source that cannot
    /// be read now keeps its last files, as kubelet does.
    async fn refresh_volumes(&self) {
        for (volume, path) in &self.volumes {
            if volume.secret.is_some() || volume.config_map.is_some() {
                // Bounded like `publish`: a stalled API server leaves the files as they are.
                let write = write_volume(self.shared, &self.pod, volume, path);
                let _ = tokio::time::timeout(API_CALL_LIMIT, write).await;
            }
        }
    }

    fn spawn(&mut self) -> Result<tokio::process::Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = self
            .command()?
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        if let (Some(pid), Ok(mut pids)) = (child.id(), self.shared.pids.lock()) {
            pids.insert(self.key(), pid as i32);
        }
        self.state.running_since = Some(now());
        self.state.phase = "Running";
        Ok(child)
    }

    fn forget(&self) {
        if let Ok(mut pids) = self.shared.pids.lock() {
            pids.remove(&self.key());
        }
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any()
        )
    }

    async fn publish(&mut self) {
        let container_id = "";
        let write = write_status(
            self.shared,
            &self.pod,
            Some(self),
            &self.machine,
            &self.state,
            container_id,
        );
        // Bounded: a stalled API server must not stop this pod's probes (a real kubelet probes
        // on a loop of its own); an unfinished write is retried.
        let written = tokio::time::timeout(API_CALL_LIMIT, write).await;
        self.unpublished = !written.unwrap_or(false);
    }

    /// Runs, probes and restarts the container until the pod is deleted.
    async fn live(&mut self, updates: &mut watch::Receiver<Option<Pod>>) {
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(message) => {
                    self.state.phase = "Failed";
                    self.state.message = Some(message);
                    self.publish().await;
                    wait_for_deletion(self.shared, &self.pod, updates).await;
                    return;
                }
            };
            self.state.ready = false;
            self.publish().await;
            let started = tokio::time::Instant::now();
            let mut readiness = Prober::new(self.container.readiness_probe.clone(), self.ip);
            let mut liveness = Prober::new(self.container.liveness_probe.clone(), self.ip);
            let mut refresh = tokio::time::interval(VOLUME_REFRESH);
            let exit = loop {
                tokio::select! {
                    status = child.wait() => break status.ok(),
                    () = readiness.due() => {
                        let ready = readiness.check(&self.container).await;
                        if ready != self.state.ready {
                            self.state.ready = ready;
                            self.publish().await;
                        }
                    }
                    () = liveness.due() => {
                        if !liveness.check(&self.container).await {
                            // As kubelet does: kill the container and let the policy restart it.
                            stop(&mut child, self.grace(None)).await;
                        }
                    }
                    () = tokio::time::sleep(Duration::from_secs(2)), if self.unpublished => {
                        self.publish().await;
                    }
                    _ = refresh.tick() => self.refresh_volumes().await,
                    changed = updates.changed() => {
                        let deleting = changed.is_err()
                            || updates.borrow().as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some());
                        if deleting {
                            let pod = updates.borrow().clone();
                            let grace = self.grace(pod.as_ref());
                            self.state.ready = false;
                            if pod.is_some() {
                                self.publish().await;
                            }
                            stop(&mut child, grace).await;
                            self.forget();
                            if pod.is_some() {
                                finish_delete(self.shared, &self.pod).await;
                            }
                            return;
                        }
                    }
                }
            };
            self.forget();
            let code = exit.map(exit_code).unwrap_or(-1);
            self.state.ready = false;
            self.state.running_since = None;
            self.state.last_exit =
                Some((code, if code == 0 { "Completed" } else { "Error" }.into()));
            let restart = match policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if !restart {
                self.state.phase = if code == 0 { "Succeeded" } else { "Failed" };
                self.publish().await;
                wait_for_deletion(self.shared, &self.pod, updates).await;
                return;
            }
            self.state.restarts += 1;
            self.publish().await;
            // A container that ran a while starts over at the shortest back-off.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = updates.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(8));
            if updates
                .borrow()
                .as_ref()
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            {
                if updates.borrow().is_some() {
                    finish_delete(self.shared, &self.pod).await;
                }
                return;
            }
        }
    }

    /// The grace period of a deletion (the pod's deletion grace, else its spec's, else 30 s).
    fn grace(&self, pod: Option<&Pod>) -> Duration {
        let seconds = pod
            .and_then(|p| p.metadata.deletion_grace_period_seconds)
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Writes the pod's status as a kubelet reports it; false when the write failed or the API
/// server did not answer within 5 s (the pod's worker retries, and keeps probing meanwhile).
async fn write_status(
    shared: &Shared,
    pod: &Pod,
    run: Option<&PodRun<'_>>,
    machine: &str,
    state: &ContainerState,
    container_id: &str,
) -> bool {
    let host_ip = shared.machines.get(machine).map(|ip| ip.to_string());
    let ready = if state.ready { "True" } else { "False" };
    let condition = |kind: &str, status: &str| json!({ "type": kind, "status": status, "lastTransitionTime": now() });
    let mut status = json!({
        "phase": state.phase,
        "hostIP": host_ip,
        "hostIPs": host_ip.as_ref().map(|ip| vec![json!({ "ip": ip })]),
        "startTime": pod.status.as_ref().and_then(|s| s.start_time.clone()).map(|t| json!(t)).unwrap_or(json!(now())),
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "message": state.message,
    });
    if let Some(run) = run {
        let ip = run.ip.to_string();
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
        let current = match (&state.running_since, &state.last_exit) {
            (Some(since), _) => json!({ "running": { "startedAt": since } }),
            (None, Some((code, reason))) if state.phase != "Running" => {
                json!({ "terminated": { "exitCode": code, "reason": reason, "finishedAt": now() } })
            }
            _ => json!({ "waiting": { "reason": "CrashLoopBackOff" } }),
        };
        let last = match &state.last_exit {
            Some((code, reason)) => {
                json!({ "terminated": { "exitCode": code, "reason": reason, "finishedAt": now() } })
            }
            None => json!({}),
        };
        status["containerStatuses"] = json!([{
            "name": run.container.name,
            "image": run.container.image,
            "imageID": "",
            "containerID": container_id,
            "ready": state.ready,
            "started": state.running_since.is_some(),
            "restartCount": state.restarts,
            "state": current,
            "lastState": last,
        }]);
        status["initContainerStatuses"] = run
            .init_containers
            .iter()
            .map(|(name, image)| {
                json!({
                    "name": name, "image": image, "imageID": "", "ready": true,
                    "restartCount": 0,
                    "state": { "terminated": { "exitCode": 0, "reason": "Completed" } },
                })
            })
            .collect();
    }
    let api: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let patch = json!({ "status": status });
    let patch = Patch::Merge(&patch);
    let name = pod.name_any();
    let params = PatchParams::default();
    let write = api.patch_status(&name, &params, &patch);
    match tokio::time::timeout(Duration::from_secs(5), write).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if crate::cluster::status_code(&e) == Some(404) => true,
        Ok(Err(_)) | Err(_) => false,
    }
}

/// `$(NAME)` references to earlier env vars, expanded as kubelet does.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = value.to_string();
    for (name, v) in env {
        out = out.replace(&format!("$({name})"), v);
    }
    out
}

async fn env_value(
    shared: &Shared,
    pod: &Pod,
    var: &EnvVar,
    ip: Ipv4Addr,
    machine: &str,
) -> Result<Option<String>, String> {
    if let Some(value) = &var.value {
        return Ok(Some(value.clone()));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(String::new()));
    };
    let namespace = pod.namespace().unwrap_or_default();
    if let Some(field) = &from.field_ref {
        let value = match field.field_path.as_str() {
            "metadata.name" => pod.name_any(),
            "metadata.namespace" => namespace,
            "metadata.uid" => pod.uid().unwrap_or_default(),
            "spec.nodeName" => machine.to_string(),
            "spec.serviceAccountName" => pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" => ip.to_string(),
            "status.hostIP" => shared
                .machines
                .get(machine)
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            other => return Err(format!("env {}: unsupported fieldRef {other}", var.name)),
        };
        return Ok(Some(value));
    }
    // A key of a Secret or ConfigMap: the same fetch as a volume's, then one key of it.
    let (kind, name, key, optional, files) = if let Some(r) = &from.secret_key_ref {
        let files = secret_files(shared, &namespace, &r.name, r.optional).await?;
        let text = files
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        ("Secret", &r.name, &r.key, r.optional, text)
    } else if let Some(r) = &from.config_map_key_ref {
        let files = config_map_files(shared, &namespace, &r.name, r.optional).await?;
        ("ConfigMap", &r.name, &r.key, r.optional, files)
    } else {
        return Ok(Some(String::new()));
    };
    match (files.get(key), optional.unwrap_or(false)) {
        (Some(value), _) => Ok(Some(value.clone())),
        (None, true) => Ok(None),
        (None, false) => Err(format!("env {}: {kind} key {name}/{key} missing", var.name)),
    }
}

/// Writes a volume's files into `path`; a file whose content changed is replaced atomically
/// (written beside it, then renamed), so a reader never sees half of it.
async fn write_volume(
    shared: &Shared,
    pod: &Pod,
    volume: &Volume,
    path: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
    let namespace = pod.namespace().unwrap_or_default();
    let write = |name: &str, bytes: &[u8]| -> Result<(), String> {
        let file = path.join(name);
        if std::fs::read(&file).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let staged = path.join(format!("..{}.new", name.replace('/', "_")));
        std::fs::write(&staged, bytes)
            .and_then(|()| std::fs::rename(&staged, &file))
            .map_err(|e| format!("writing {}: {e}", file.display()))
    };
    if let Some(source) = &volume.config_map {
        let files = config_map_files(shared, &namespace, &source.name, source.optional).await?;
        for (key, file) in select_items(files, source.items.as_deref()) {
            write(&file, key.as_bytes())?;
        }
    } else if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let files = secret_files(shared, &namespace, &name, source.optional).await?;
        for (bytes, file) in select_items(files, source.items.as_deref()) {
            write(&file, &bytes)?;
        }
    } else if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                let jwt = request_token(
                    shared,
                    pod,
                    token.audience.clone(),
                    token.expiration_seconds,
                )
                .await?;
                write(&token.path, jwt.as_bytes())?;
            }
            if let Some(cm) = &source.config_map {
                let files = config_map_files(shared, &namespace, &cm.name, cm.optional).await?;
                for (value, file) in select_items(files, cm.items.as_deref()) {
                    write(&file, value.as_bytes())?;
                }
            }
            if let Some(secret) = &source.secret {
                let files = secret_files(shared, &namespace, &secret.name, secret.optional).await?;
                for (bytes, file) in select_items(files, secret.items.as_deref()) {
                    write(&file, &bytes)?;
                }
            }
            if let Some(downward) = &source.downward_api {
                for item in downward.items.iter().flatten() {
                    let value = match item.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("metadata.namespace") => namespace.clone(),
                        Some("metadata.name") => pod.name_any(),
                        _ => String::new(),
                    };
                    write(&item.path, value.as_bytes())?;
                }
            }
        }
    } else if volume.empty_dir.is_none() {
        return Err(format!("volume {}: unsupported source", volume.name));
    }
    Ok(())
}

/// (content, file name) of the selected keys: all keys, or `items` (key → path).
fn select_items<T>(
    files: BTreeMap<String, T>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Vec<(T, String)> {
    let mut files = files;
    match items {
        None => files.into_iter().map(|(k, v)| (v, k)).collect(),
        Some(items) => items
            .iter()
            .filter_map(|item| files.remove(&item.key).map(|v| (v, item.path.clone())))
            .collect(),
    }
}

async fn config_map_files(
    shared: &Shared,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, String>, String> {
    let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), namespace);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(map) => Ok(map.data.unwrap_or_default()),
        None if optional.unwrap_or(false) => Ok(BTreeMap::new()),
        None => Err(format!("ConfigMap {name} not found")),
    }
}

async fn secret_files(
    shared: &Shared,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), namespace);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(secret) => Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        None if optional.unwrap_or(false) => Ok(BTreeMap::new()),
        None => Err(format!("Secret {name} not found")),
    }
}

/// A service-account token bound to the pod (TokenRequest), as kubelet projects it.
async fn request_token(
    shared: &Shared,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(shared.client.clone(), &namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: expiration,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        },
        ..TokenRequest::default()
    };
    let answer: TokenRequest = api
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for ServiceAccount {account}: {e}"))?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

/// A readiness or liveness probe's schedule and count of consecutive failures.
struct Prober {
    probe: Option<Probe>,
    ip: Ipv4Addr,
    next: tokio::time::Instant,
    failures: i32,
    succeeded_once: bool,
}

impl Prober {
    fn new(probe: Option<Probe>, ip: Ipv4Addr) -> Prober {
        let delay = probe
            .as_ref()
            .and_then(|p| p.initial_delay_seconds)
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or_default();
        Prober {
            probe,
            ip,
            next: tokio::time::Instant::now() + delay + Duration::from_millis(300),
            failures: 0,
            succeeded_once: false,
        }
    }

    /// Resolves when the next probe is due (never without a probe).
    async fn due(&self) {
        if self.probe.is_none() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.next).await;
    }

    /// Runs the probe; true while the container passes (below the failure threshold). Until
    /// its first success a readiness probe is retried every 300 ms, so a pod turns ready soon
    /// after its process does.
    async fn check(&mut self, container: &Container) -> bool {
        let Some(probe) = self.probe.clone() else {
            return true;
        };
        let period =
            Duration::from_secs(u64::try_from(probe.period_seconds.unwrap_or(10)).unwrap_or(10));
        let timeout =
            Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1)).unwrap_or(1));
        let ok = match &probe.http_get {
            Some(action) => http_probe(action, container, self.ip, timeout).await,
            None => true,
        };
        if ok {
            self.failures = 0;
            self.succeeded_once = true;
        } else {
            self.failures += 1;
        }
        self.next = tokio::time::Instant::now()
            + if self.succeeded_once {
                period
            } else {
                Duration::from_millis(300)
            };
        if !self.succeeded_once {
            return ok;
        }
        self.failures < probe.failure_threshold.unwrap_or(3)
    }
}

async fn http_probe(
    action: &HTTPGetAction,
    container: &Container,
    ip: Ipv4Addr,
    timeout: Duration,
) -> bool {
    let port = match &action.port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    };
    let Some(port) = port else {
        return false;
    };
    let path = action.path.clone().unwrap_or_else(|| "/".into());
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.37\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let code: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
