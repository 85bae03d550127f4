//! A real Kubernetes control plane for the operator's tests: etcd, kube-apiserver and
//! kube-controller-manager, built from Go modules by `scripts/control-plane` (see
//! `tests/controlplane/`), run on free loopback ports with fresh certificates, and killed when
//! the [`ControlPlane`] drops (also on panic).
//!
//! What is real: storage, the API server's validation (structural schemas, CEL), RBAC with
//! the Node authorizer, server-side apply, watches, the scale and eviction subresources, and the
//! controllers the operator relies on (garbage collection, disruption budgets, Deployments and
//! ReplicaSets for the operator itself, EndpointSlices, service accounts and their tokens).
//! What stands in: the kubelet and container runtime ([`kubelet`]), and no scheduler (that
//! kubelet binds pods itself).

pub mod kubelet;
pub mod pki;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{KillOnDrop, TempDir, free_port};
use pki::Pki;

/// How long the API server gets to become ready on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The bearer token of the tests' cluster-admin identity (`system:masters`).
const ADMIN_TOKEN: &str = "wsfleet-test-admin";
/// The controller-manager's own identity, which the bootstrap RBAC already knows.
const CONTROLLER_MANAGER_TOKEN: &str = "wsfleet-test-kube-controller-manager";
/// The controllers the operator depends on (and the ones that keep namespaces and service
/// accounts working). No node lifecycle controller: the process kubelet's nodes never go away.
const CONTROLLERS: &str = "garbage-collector-controller,disruption-controller,\
deployment-controller,replicaset-controller,endpointslice-controller,serviceaccount-controller,\
serviceaccount-token-controller,root-ca-certificate-publisher-controller,namespace-controller";

/// The directory holding `etcd`, `kube-apiserver` and `kube-controller-manager`:
/// `$WSFLEET_CONTROL_PLANE_BIN`, else `target/controlplane/current` as `scripts/control-plane`
/// leaves it.
pub fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("WSFLEET_CONTROL_PLANE_BIN") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test executable lives in target/<profile>/deps");
    target.join("controlplane/current")
}

/// The path of a binary of this workspace built next to the test executable
/// (`target/<profile>/<name>`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .ancestors()
        .nth(2)
        .expect("the test executable lives in target/<profile>/deps")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`; ./scripts/test does)",
        bin.display()
    );
    bin
}

/// etcd, kube-apiserver and kube-controller-manager, running.
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// The CA that signed the API server's certificate.
    pub ca_cert: PathBuf,
    /// A kubeconfig for the cluster-admin identity.
    pub kubeconfig: PathBuf,
    // Dropped in reverse order of start: the controller-manager, the API server, then etcd.
    processes: Vec<(&'static str, KillOnDrop)>,
    dir: TempDir,
}

impl ControlPlane {
    /// Starts a control plane and waits until the API server is ready and the namespace
    /// `default` has its service account (the controllers are working).
    pub async fn start() -> ControlPlane {
        let bin = binaries();
        for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            assert!(
                bin.join(name).exists(),
                "{} is missing: build the control plane with scripts/control-plane \
                 (./scripts/test does it when needed)",
                bin.join(name).display()
            );
        }
        let dir = TempDir::new("control-plane");
        let pki = Pki::generate(dir.path());
        let mut plane = ControlPlane {
            server: String::new(),
            ca_cert: pki.ca_cert.clone(),
            kubeconfig: dir.path().join("admin.kubeconfig"),
            processes: Vec::new(),
            dir,
        };

        let etcd_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_dir = plane.dir.path().join("etcd");
        plane.spawn(
            "etcd",
            Command::new(bin.join("etcd")).args([
                "--name=test",
                &format!("--data-dir={}", etcd_dir.display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{}", free_port()),
                "--initial-cluster-state=new",
                // A test cluster needs no durability, and fsync dominates on a busy disk.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]),
        );

        let port = free_port();
        plane.server = format!("https://127.0.0.1:{port}");
        let tokens = plane.dir.file(
            "tokens.csv",
            &format!(
                "{ADMIN_TOKEN},wsfleet-test-admin,admin,system:masters\n\
                 {CONTROLLER_MANAGER_TOKEN},system:kube-controller-manager,kcm,\n"
            ),
        );
        let path = |p: &Path| p.display().to_string();
        plane.spawn(
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver")).args([
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", path(plane.dir.path())),
                format!("--tls-cert-file={}", path(&pki.serving_cert)),
                format!("--tls-private-key-file={}", path(&pki.serving_key)),
                format!("--client-ca-file={}", path(&pki.ca_cert)),
                format!("--token-auth-file={}", path(&tokens)),
                "--authorization-mode=Node,RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!(
                    "--service-account-key-file={}",
                    path(&pki.service_account_public_key)
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    path(&pki.service_account_key)
                ),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                // The `kubernetes` Service's endpoints would be this machine's address, which
                // no pod here uses: pods get a kubeconfig for the API server instead.
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
                "-v=1".into(),
            ]),
        );
        plane.write_kubeconfig(&plane.kubeconfig, &format!("token: {ADMIN_TOKEN}"));
        plane.wait_ready().await;

        let kcm_config = plane.dir.path().join("kube-controller-manager.kubeconfig");
        plane.write_kubeconfig(&kcm_config, &format!("token: {CONTROLLER_MANAGER_TOKEN}"));
        plane.spawn(
            "kube-controller-manager",
            Command::new(bin.join("kube-controller-manager")).args([
                format!("--kubeconfig={}", path(&kcm_config)),
                format!("--controllers={CONTROLLERS}"),
                "--use-service-account-credentials".into(),
                format!(
                    "--service-account-private-key-file={}",
                    path(&pki.service_account_key)
                ),
                format!("--root-ca-file={}", path(&pki.ca_cert)),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                // Quick garbage collection and budget updates keep the scenarios short.
                "--concurrent-gc-syncs=5".into(),
                "-v=1".into(),
            ]),
        );
        plane.wait_for_controllers().await;
        plane
    }

    /// A client authenticated as cluster-admin, bound to the caller's runtime.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig).await
    }

    /// Creates namespace `name` (a test's own); one that exists already (a scenario that put
    /// Secrets there before its fleet) is used as it is.
    pub async fn namespace(&self, name: &str) -> kube::Client {
        let client = self.client().await;
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name }
        }))
        .expect("namespace");
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("creating namespace {name}: {e}"),
        }
        client
    }

    /// Sends `signal` to a component (`etcd`, `kube-apiserver`, `kube-controller-manager`),
    /// e.g. SIGSTOP and SIGCONT to make it hang and resume.
    pub fn signal(&self, component: &str, signal: i32) {
        let (_, process) = self
            .processes
            .iter()
            .find(|(name, _)| *name == component)
            .unwrap_or_else(|| panic!("no {component} in this control plane"));
        let pid = i32::try_from(process.0.id()).expect("a pid");
        // SAFETY: kill(2) on a child of this process that has not been reaped.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signalling {component}");
    }

    /// The last `lines` lines of a component's log (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(component)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A kubeconfig for this API server with `user` (a YAML mapping body, e.g. `token: x` or
    /// `tokenFile: /path`), written to `path`.
    pub fn write_kubeconfig(&self, path: &Path, user: &str) {
        std::fs::write(path, kubeconfig(&self.server, &self.ca_cert, user))
            .expect("writing a kubeconfig");
    }

    fn log_path(&self, component: &str) -> PathBuf {
        self.dir.path().join(format!("{component}.log"))
    }

    fn spawn(&mut self, component: &'static str, command: &mut Command) {
        let log = std::fs::File::create(self.log_path(component)).expect("creating a log file");
        let err = log.try_clone().expect("log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {component}: {e}"));
        self.processes.push((component, KillOnDrop(child)));
    }

    /// Polls `/readyz` until it answers `ok`; panics with the logs when it never does or a
    /// component exits.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.client().await;
        loop {
            let request = http_get("/readyz");
            if let Ok(body) = client.request_text(request).await
                && body.trim() == "ok"
            {
                return;
            }
            self.check_alive();
            if Instant::now() > deadline {
                panic!(
                    "the API server was not ready within {READY_TIMEOUT:?}:\n{}\n{}",
                    self.log_tail("etcd", 20),
                    self.log_tail("kube-apiserver", 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for the service-account controller to create `default/default`, the sign that the
    /// controller-manager is running its controllers.
    async fn wait_for_controllers(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.client().await;
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client, "default");
        loop {
            if let Ok(Some(_)) = accounts.get_opt("default").await {
                return;
            }
            self.check_alive();
            if Instant::now() > deadline {
                panic!(
                    "the controller-manager did not start its controllers within \
                     {READY_TIMEOUT:?}:\n{}",
                    self.log_tail("kube-controller-manager", 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn check_alive(&mut self) {
        let mut dead = None;
        for (component, child) in &mut self.processes {
            if let Ok(Some(status)) = child.0.try_wait() {
                dead = Some((*component, status));
            }
        }
        if let Some((component, status)) = dead {
            panic!(
                "{component} exited ({status}):\n{}",
                self.log_tail(component, 40)
            );
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some((_, process)) = self.processes.pop() {
            drop(process);
        }
    }
}

/// A client from a kubeconfig file, bound to the caller's runtime.
pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    // kube's TLS uses ring; another crate in the test build brings aws-lc-rs as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let file = Kubeconfig::read_from(kubeconfig).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("a valid kubeconfig");
    kube::Client::try_from(config).expect("building a client")
}

/// `GET path` as a request for [`kube::Client::request_text`].
pub fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path)
        .body(Vec::new())
        .expect("a valid request")
}

/// A one-cluster, one-user kubeconfig.
fn kubeconfig(server: &str, ca: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: test\n  user:\n    {user}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
         current-context: test\n",
        ca = ca.display()
    )
}

/// The HTTP status of an API error response, if it was one.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
