//! Test kit shared by the workspace's integration tests: starts real gateway processes on
//! loopback and cleans them up (every process is killed when its handle drops), real
//! `redis-server` processes and clusters ([`redis`]), a tiny HTTP client for the admin port and
//! deadline-bounded polling.

pub mod cluster;
pub mod redis;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a child process gets to come up on a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let unique = format!("wsfleet-{tag}-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("writing a temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `wsfleet-gateway` process.
pub struct Gateway {
    child: KillOnDrop,
    /// The WebSocket listener (`ws://{ws_addr}/ws`).
    pub ws_addr: SocketAddr,
    /// The admin listener.
    pub admin_addr: SocketAddr,
    /// The publish API listener; `None` when the node has no publish token (then it is closed).
    pub api_addr: Option<SocketAddr>,
}

impl Gateway {
    /// Starts the gateway binary at `bin` on ephemeral loopback ports with extra `args` and
    /// environment `envs`, and waits for it to report its listeners. Set `WSFLEET_TEST_LOG`
    /// to see its logs; without it, a gateway that fails to start has its log in the panic.
    pub fn start(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Gateway {
        let log = std::env::temp_dir().join(format!(
            "wsfleet-gateway-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        let log_file = std::fs::File::create(&log).expect("creating the gateway log file");
        let mut command = Command::new(bin);
        // Settings from the developer's environment must not leak into a test's node.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WSFLEET_") || name == "NODE_ID" {
                command.env_remove(&name);
            }
        }
        command
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--api-listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("WSFLEET_TEST_LOG").unwrap_or("warn".into()),
            )
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("WSFLEET_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::from(log_file)
            });
        let mut child = command.spawn().expect("spawning the gateway");
        let stdout = child.stdout.take().expect("gateway stdout is piped");
        let child = KillOnDrop(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("wsfleet-gateway listening") {
                    let _ = tx.send(line);
                }
            }
        });
        // The reader thread drops `tx` when stdout closes, so an early exit ends the wait.
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            panic!("gateway did not report its listeners; its log:\n{output}")
        });
        let _ = std::fs::remove_file(&log);
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        Gateway {
            ws_addr: addr("ws="),
            admin_addr: addr("admin="),
            api_addr: line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("api="))
                .and_then(|a| a.parse().ok()),
            child,
        }
    }

    /// `ws://…/ws` of this node, with an optional query string.
    pub fn ws_url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("ws://{}/ws", self.ws_addr)
        } else {
            format!("ws://{}/ws?{query}", self.ws_addr)
        }
    }

    /// An admin-port request; see [`http`].
    pub fn admin(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> HttpReply {
        http(self.admin_addr, method, path, token, body)
    }

    /// A publish-API request; see [`http`].
    pub fn api(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> HttpReply {
        let addr = self
            .api_addr
            .expect("the node was started without a publish token, so its API port is closed");
        http(addr, method, path, token, body)
    }

    /// The `connections` number from `/status`.
    pub fn connections(&self) -> u64 {
        let reply = self.admin("GET", "/status", None, "");
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
        json["connections"].as_u64().unwrap_or(u64::MAX)
    }

    /// The value of a metric line from `/metrics` (e.g. `wsfleet_connections`), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let reply = self.admin("GET", "/metrics", None, "");
        reply
            .body
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// The process id, for fault tests.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, …) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.0.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

/// A response from [`http`].
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// A header's value (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`; enough for admin endpoints and for reading
/// refused WebSocket upgrades. Panics on I/O errors (a test failure).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> HttpReply {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    raw_http(addr, &request)
}

/// Sends raw request bytes and parses the response (used for upgrade requests too).
pub fn raw_http(addr: SocketAddr, request: &str) -> HttpReply {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(START_TIMEOUT))
        .expect("setting a read timeout");
    stream
        .write_all(request.as_bytes())
        .expect("writing the request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&String::from_utf8_lossy(&raw))
}

fn parse_response(text: &str) -> HttpReply {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Opens a WebSocket upgrade on a raw TCP socket and returns the socket after the `101`
/// response, without ever reading or answering frames: a zombie client.
pub fn raw_upgrade(addr: SocketAddr, path: &str) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(START_TIMEOUT))
        .expect("setting a read timeout");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .expect("writing the upgrade");
    // Read byte by byte up to the end of the headers so no frame bytes are consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let status = parse_response(&String::from_utf8_lossy(&head)).status;
    (status, stream)
}
