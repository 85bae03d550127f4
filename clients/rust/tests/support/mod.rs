//! Real processes for the end-to-end tests: a `redis-server` and gateway nodes on random
//! loopback ports, each killed when its handle drops.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DRAIN_TOKEN: &str = "e2e-drain-token";
/// Gateway nodes serve anonymous clients unless started with [`Gateway::start_jwt`].
const ANONYMOUS: &[&str] = &["--anonymous"];

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Polls until `port` accepts TCP connections, or panics with `what` after `limit`.
fn wait_for_port(port: u16, limit: Duration, what: &str, child: &mut Child) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Someone else may have taken the port between free_port() and our bind.
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited with {status}; port {port} is held by another process");
            }
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within {limit:?}");
}

/// The gateway binary: `$WSFLEET_GATEWAY_BIN`, else `wsfleet-gateway` in the target directory
/// this test executable was built into.
pub fn gateway_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("WSFLEET_GATEWAY_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "WSFLEET_GATEWAY_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/wsfleet-gateway
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("wsfleet-gateway"))
        .expect("test executable has a target directory");
    assert!(
        candidate.is_file(),
        "gateway binary not found at {}: build it (`cargo build -p wsfleet-gateway`) or set \
         WSFLEET_GATEWAY_BIN to its path",
        candidate.display()
    );
    candidate
}

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts on a given port, e.g. to restart an empty Redis where the old one was.
    pub fn start_on(port: u16) -> Redis {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed at /usr/bin/redis-server?)");
        wait_for_port(port, Duration::from_secs(20), "redis-server", &mut child);
        Redis { child, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Gateway {
    child: Child,
    key_file: Option<PathBuf>,
    pub node: String,
    pub port: u16,
    pub admin_port: u16,
}

impl Gateway {
    /// Starts an anonymous gateway node; `redis_url` empty = in-process engine.
    pub fn start(node: &str, redis_url: &str) -> Gateway {
        Gateway::start_on(node, redis_url, free_port(), free_port())
    }

    /// Starts with extra command-line settings, e.g. `["--max-connections", "1"]`.
    pub fn start_with(node: &str, redis_url: &str, extra: &[&str]) -> Gateway {
        Gateway::spawn(node, redis_url, free_port(), free_port(), ANONYMOUS, extra)
    }

    /// Starts a node that requires HS256 tokens signed with `secret` (written to a scratch
    /// key file), with extra settings such as `["--jwt-leeway-secs", "1"]`.
    pub fn start_jwt(node: &str, secret: &str, extra: &[&str]) -> Gateway {
        let key = std::env::temp_dir().join(format!(
            "wsfleet-client-e2e-{}-{node}-{}.key",
            std::process::id(),
            free_port()
        ));
        std::fs::write(&key, secret).expect("write the JWT key file");
        let key_path = key.to_str().expect("temp paths are UTF-8");
        let auth = ["--jwt-algorithm", "HS256", "--jwt-key-file", key_path];
        let mut gateway = Gateway::spawn(node, "", free_port(), free_port(), &auth, extra);
        // The node re-reads its key file while it runs: removed only when it is gone.
        gateway.key_file = Some(key);
        gateway
    }

    /// Starts on given ports, e.g. to restart a node where it was.
    pub fn start_on(node: &str, redis_url: &str, port: u16, admin_port: u16) -> Gateway {
        Gateway::spawn(node, redis_url, port, admin_port, ANONYMOUS, &[])
    }

    fn spawn(
        node: &str,
        redis_url: &str,
        port: u16,
        admin_port: u16,
        auth: &[&str],
        extra: &[&str],
    ) -> Gateway {
        let mut child = Command::new(gateway_bin())
            .args(["--node-id", node])
            .args(auth)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--redis-url", redis_url])
            .args(extra)
            .env("WSFLEET_DRAIN_TOKEN", DRAIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(gateway_logs())
            .spawn()
            .expect("start the gateway binary");
        wait_for_port(port, Duration::from_secs(30), "gateway", &mut child);
        Gateway {
            child,
            key_file: None,
            node: node.to_owned(),
            port,
            admin_port,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Asks the node to drain over `window_seconds` via its admin API.
    pub fn drain(&self, window_seconds: u64) {
        let body = format!(
            r#"{{"window_seconds":{window_seconds},"deadline_seconds":{},"reason":"e2e"}}"#,
            window_seconds + 30
        );
        let request = format!(
            "POST /drain HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {DRAIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = http_exchange(self.admin_port, &request);
        assert!(
            response.starts_with("HTTP/1.1 2"),
            "POST /drain failed: {response}"
        );
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the process: a node that stops answering
    /// without closing anything, like a hung host.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the process at once, like a node lost without a drain.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A stopped process still dies of SIGKILL; SIGCONT first keeps its exit clean.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        self.kill();
        if let Some(key) = self.key_file.take() {
            let _ = std::fs::remove_file(key);
        }
    }
}

/// Gateway logs are noise in passing runs; `WSFLEET_E2E_LOGS=1` shows them.
fn gateway_logs() -> Stdio {
    if std::env::var_os("WSFLEET_E2E_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

fn http_exchange(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    stream
        .write_all(request.as_bytes())
        .expect("write the request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}
