//! Real `redis-server` processes for tests: a standalone server that can be killed and restarted
//! on the same port (fault tests), and a local 3-master Redis Cluster. Both run without
//! persistence, so a restart loses all data, and both are killed when dropped.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::tls::TlsFiles;

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_CLI: &str = "redis-cli";
/// How long a freshly spawned server may take to answer PING on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a new cluster may take to agree on `cluster_state:ok`.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
const SPAWN_ATTEMPTS: usize = 5;

/// A standalone `redis-server` on a random free loopback port, without persistence.
pub struct RedisServer {
    port: u16,
    /// The TLS listener's port, when started with [`RedisServer::start_tls`].
    tls_port: Option<u16>,
    /// Arguments beyond the common ones, repeated on restart.
    extra: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING. Retries on another port when the chosen
    /// one was taken between picking and binding.
    pub fn start() -> io::Result<Self> {
        Self::start_with(|| Ok((None, Vec::new())))
    }

    /// Starts a server that also listens with TLS (certificates from `tls`), on a second port.
    /// With `require_client_cert`, TLS clients must present a certificate the CA signed. The
    /// plain port stays open for the test's own checks (`cli`, PING); the code under test gets
    /// [`RedisServer::tls_url`].
    pub fn start_tls(tls: &TlsFiles, require_client_cert: bool) -> io::Result<Self> {
        Self::start_with(|| {
            let tls_port = free_port()?;
            let mut extra = vec!["--tls-port".to_string(), tls_port.to_string()];
            extra.extend(tls_args(tls, require_client_cert));
            Ok((Some(tls_port), extra))
        })
    }

    fn start_with(
        options: impl Fn() -> io::Result<(Option<u16>, Vec<String>)>,
    ) -> io::Result<Self> {
        let mut last_error = None;
        for _ in 0..SPAWN_ATTEMPTS {
            let port = free_port()?;
            let (tls_port, extra) = options()?;
            let dir = TempDir::new(&format!("redis-{port}"))?;
            match spawn_ready(port, dir.path(), &extra) {
                Ok(child) => {
                    return Ok(Self {
                        port,
                        tls_port,
                        extra,
                        dir,
                        child: Some(child),
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `rediss://127.0.0.1:<tls port>/` of a server started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("the server was started without TLS");
        format!("rediss://127.0.0.1:{port}/")
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts a fresh, empty one on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.child = Some(spawn_ready(self.port, self.dir.path(), &self.extra)?);
        Ok(())
    }

    /// Runs one command through `redis-cli` and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters (optionally with one replica each) on random free
/// loopback ports.
pub struct RedisCluster {
    ports: Vec<u16>,
    /// TLS ports, parallel to `ports`, of a cluster started with [`RedisCluster::start_tls`].
    tls_ports: Vec<u16>,
    /// CA that signs the servers' certificates, for `redis-cli --tls` (TLS clusters only).
    tls_ca: Option<PathBuf>,
    children: Vec<Option<Child>>,
    replicas: usize,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start() -> io::Result<Self> {
        Self::start_with_replicas(0)
    }

    /// Like [`RedisCluster::start`] with `replicas` replicas per master (3 × (1 + replicas)
    /// processes); waits until every replica's link to its master is up, so a failover can
    /// promote it.
    pub fn start_with_replicas(replicas: usize) -> io::Result<Self> {
        Self::start_inner(replicas, None)
    }

    /// A three-master cluster whose nodes also listen with TLS (certificates from `tls`, no
    /// client certificate required) and talk to each other over TLS. Redis answers `CLUSTER
    /// SLOTS` with TLS ports to TLS clients, so [`RedisCluster::tls_urls`] seeds reach the
    /// whole cluster over TLS; the plain ports serve the test's own checks.
    pub fn start_tls(tls: &TlsFiles) -> io::Result<Self> {
        Self::start_inner(0, Some(tls))
    }

    fn start_inner(replicas: usize, tls: Option<&TlsFiles>) -> io::Result<Self> {
        let dir = TempDir::new("redis-cluster")?;
        let mut cluster = Self {
            ports: Vec::new(),
            tls_ports: Vec::new(),
            tls_ca: tls.map(|t| t.ca_cert.clone()),
            children: Vec::new(),
            replicas,
            _dir: dir,
        };
        for _ in 0..3 * (1 + replicas) {
            let (port, tls_port, child) = cluster.spawn_node(tls)?;
            cluster.ports.push(port);
            cluster.tls_ports.extend(tls_port);
            cluster.children.push(Some(child));
        }
        cluster.create()?;
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    /// `rediss://` seed URLs of a cluster started with [`RedisCluster::start_tls`].
    pub fn tls_urls(&self) -> Vec<String> {
        self.tls_ports
            .iter()
            .map(|port| format!("rediss://127.0.0.1:{port}/"))
            .collect()
    }

    /// The ports of all nodes (masters and replicas) that were started.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The ports of the current masters, per the first live node.
    pub fn masters(&self) -> io::Result<Vec<u16>> {
        let nodes = self.live_cli(&["CLUSTER", "NODES"])?;
        Ok(nodes
            .lines()
            .filter(|line| {
                let flags = line.split_whitespace().nth(2).unwrap_or("");
                flags.contains("master") && !flags.contains("fail")
            })
            .filter_map(|line| {
                let address = line.split_whitespace().nth(1)?.split('@').next()?;
                address.rsplit(':').next()?.parse().ok()
            })
            .collect())
    }

    /// Kills one node (SIGKILL), e.g. a master to force a failover.
    pub fn kill_node(&mut self, port: u16) {
        if let Some(index) = self.ports.iter().position(|&p| p == port)
            && let Some(mut child) = self.children[index].take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the surviving nodes agree on `cluster_state:ok` again (after a failover).
    pub fn wait_until_healthy(&self) -> io::Result<()> {
        self.wait_until_ok()
    }

    /// Seed URLs of all nodes that were started.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// Runs one command through `redis-cli` against the given node.
    pub fn cli(&self, port: u16, args: &[&str]) -> io::Result<String> {
        cli(port, args)
    }

    /// The hash slot of `key`.
    pub fn key_slot(&self, key: &str) -> io::Result<u16> {
        self.live_cli(&["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .map_err(|_| io::Error::other("CLUSTER KEYSLOT did not answer a number"))
    }

    /// The port of the master that owns `slot`, as seen by the first live node.
    pub fn master_for_slot(&self, slot: u16) -> io::Result<u16> {
        let nodes = self.live_cli(&["CLUSTER", "NODES"])?;
        nodes
            .lines()
            .find_map(|line| owner_in_nodes_line(line, slot))
            .ok_or_else(|| io::Error::other(format!("no master owns slot {slot}")))
    }

    /// The port of the master that owns the hash slot of `key`.
    pub fn master_for_key(&self, key: &str) -> io::Result<u16> {
        self.master_for_slot(self.key_slot(key)?)
    }

    /// Moves an empty `slot` to the master on port `to` (IMPORTING/MIGRATING, then NODE on
    /// every master), as a resharding would. Shard-channel subscribers of the slot on the old
    /// owner get unsubscribed by Redis.
    pub fn move_empty_slot(&self, slot: u16, to: u16) -> io::Result<()> {
        let from = self.master_for_slot(slot)?;
        let from_id = cli(from, &["CLUSTER", "MYID"])?.trim().to_string();
        let to_id = cli(to, &["CLUSTER", "MYID"])?.trim().to_string();
        let slot = slot.to_string();
        expect_ok(cli(
            to,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        )?)?;
        expect_ok(cli(
            from,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
        )?)?;
        for port in [to, from] {
            expect_ok(cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?)?;
        }
        for port in self
            .masters()?
            .into_iter()
            .filter(|&p| p != to && p != from)
        {
            expect_ok(cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?)?;
        }
        Ok(())
    }

    /// Runs a command on the first node that is still running.
    fn live_cli(&self, args: &[&str]) -> io::Result<String> {
        let port = self
            .ports
            .iter()
            .zip(&self.children)
            .find_map(|(port, child)| child.as_ref().map(|_| *port))
            .ok_or_else(|| io::Error::other("no cluster node is running"))?;
        cli(port, args)
    }

    fn spawn_node(&self, tls: Option<&TlsFiles>) -> io::Result<(u16, Option<u16>, Child)> {
        let mut last_error = None;
        for _ in 0..SPAWN_ATTEMPTS {
            let port = free_port()?;
            let bus_port = free_port()?;
            let config_file = self._dir.path().join(format!("nodes-{port}.conf"));
            let mut extra = vec![
                "--cluster-enabled".to_string(),
                "yes".to_string(),
                "--cluster-config-file".to_string(),
                config_file.display().to_string(),
                "--cluster-port".to_string(),
                bus_port.to_string(),
                "--cluster-node-timeout".to_string(),
                "2000".to_string(),
            ];
            let tls_port = match tls {
                Some(tls) => {
                    let tls_port = free_port()?;
                    extra.extend(["--tls-port".to_string(), tls_port.to_string()]);
                    extra.extend(["--tls-cluster".to_string(), "yes".to_string()]);
                    extra.extend(["--tls-replication".to_string(), "yes".to_string()]);
                    extra.extend(tls_args(tls, false));
                    Some(tls_port)
                }
                None => None,
            };
            match spawn_ready(port, self._dir.path(), &extra) {
                Ok(child) => return Ok((port, tls_port, child)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("cluster node did not start")))
    }

    fn create(&self) -> io::Result<()> {
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        // Nodes of a TLS cluster gossip their TLS ports: create it through them.
        match &self.tls_ca {
            Some(ca) => {
                args.extend(
                    self.tls_ports
                        .iter()
                        .map(|port| format!("127.0.0.1:{port}")),
                );
                args.extend(["--tls".to_string(), "--cacert".to_string()]);
                args.push(ca.display().to_string());
            }
            None => args.extend(self.ports.iter().map(|port| format!("127.0.0.1:{port}"))),
        }
        args.extend(["--cluster-replicas".to_string(), self.replicas.to_string()]);
        args.push("--cluster-yes".to_string());
        let output = Command::new(REDIS_CLI)
            .args(&args)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        Ok(())
    }

    fn wait_until_ok(&self) -> io::Result<()> {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let live: Vec<u16> = self
            .ports
            .iter()
            .zip(&self.children)
            .filter_map(|(port, child)| child.as_ref().map(|_| *port))
            .collect();
        while Instant::now() < deadline {
            let all_ok = live.iter().all(|&port| {
                let state_ok = cli(port, &["CLUSTER", "INFO"])
                    .map(|info| info.contains("cluster_state:ok"))
                    .unwrap_or(false);
                // A replica must be linked to its master before it can take over.
                let replica_linked = cli(port, &["INFO", "replication"])
                    .map(|info| {
                        !info.contains("role:slave") || info.contains("master_link_status:up")
                    })
                    .unwrap_or(false);
                state_ok && replica_linked
            });
            if all_ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(io::Error::other("cluster did not reach cluster_state:ok"))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for mut child in self.children.iter_mut().filter_map(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn expect_ok(reply: String) -> io::Result<()> {
    if reply.trim() == "OK" {
        Ok(())
    } else {
        Err(io::Error::other(format!("expected OK, got {reply:?}")))
    }
}

/// `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges>...`
fn owner_in_nodes_line(line: &str, slot: u16) -> Option<u16> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 9 || !fields[2].contains("master") {
        return None;
    }
    let owns = fields[8..].iter().any(|range| {
        let mut bounds = range.splitn(2, '-');
        let start = bounds.next().and_then(|s| s.parse::<u16>().ok());
        let end = bounds.next().map_or(start, |s| s.parse::<u16>().ok());
        matches!((start, end), (Some(start), Some(end)) if (start..=end).contains(&slot))
    });
    if !owns {
        return None;
    }
    let address = fields[1].split('@').next()?;
    address.rsplit(':').next()?.parse().ok()
}

/// The server-side TLS settings of a test Redis.
fn tls_args(tls: &TlsFiles, require_client_cert: bool) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        "--tls-cert-file".into(),
        path(&tls.server_cert),
        "--tls-key-file".into(),
        path(&tls.server_key),
        "--tls-ca-cert-file".into(),
        path(&tls.ca_cert),
        "--tls-auth-clients".into(),
        if require_client_cert { "yes" } else { "no" }.into(),
    ]
}

/// Spawns `redis-server` on `port` and waits until it answers PING; kills it on failure.
fn spawn_ready(port: u16, dir: &Path, extra: &[String]) -> io::Result<Child> {
    let mut child = Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--dir", &dir.display().to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if ping(port) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "redis-server on port {port} exited early: {status}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(io::Error::other(format!(
        "redis-server on port {port} did not answer PING"
    )))
}

fn ping(port: u16) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

fn cli(port: u16, args: &[&str]) -> io::Result<String> {
    let output: Output = Command::new(REDIS_CLI)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Asks the OS for a free loopback port. Another process may grab it before the server binds,
/// which callers handle by retrying.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A scratch directory for server files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "wsfleet-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
