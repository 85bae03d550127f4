//! The operator and the gateway agree on `gateway.toml` because both use the contract crate's
//! `GatewayConfig`; this test holds them to it with the real binary. For every manifest in
//! `examples/`, the operator's rendering is written to a file, a real `wsfleet-gateway` starts
//! on it, and its `/status` must report every setting the fleet asked for. A misspelled key
//! must stop the node at start, naming the key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wsfleet_api::StatusReport;
use wsfleet_api::config::{GatewayConfig, JwtAlgorithm};
use wsfleet_operator::crd::WebSocketFleet;
use wsfleet_operator::resources::config::gateway_config;
use wsfleet_tests::cluster::workspace_binary;
use wsfleet_tests::{Gateway, TempDir};

fn examples() -> Vec<(String, WebSocketFleet)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("example");
            let fleet: WebSocketFleet =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), fleet)
        })
        .collect()
}

/// The rendered config with the pod's mount paths pointed at files here: the key the fleet's
/// algorithm needs, and the two token files. Everything else is as rendered.
fn runnable(mut config: GatewayConfig, dir: &TempDir) -> GatewayConfig {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/fixtures");
    config.jwt_key_file = Some(match config.jwt_algorithm {
        Some(JwtAlgorithm::RS256) => fixtures.join("rs256-public.pem"),
        Some(JwtAlgorithm::ES256) => fixtures.join("es256-public.pem"),
        _ => dir.file("jwt-secret", "a-secret-of-enough-length"),
    });
    config.drain_token_file = Some(dir.file("drain-token", "drain\n"));
    config.publish_token_file = Some(dir.file("publish-tokens", "publish\n"));
    assert_eq!(config.redis_tls_ca_file, None, "no example uses Redis TLS");
    config
}

/// The keys the test necessarily sets itself: the listeners (free loopback ports, by flag).
const OWN_KEYS: [&str; 3] = ["listen", "admin_listen", "api_listen"];

#[test]
fn every_example_config_runs_a_real_gateway_with_the_settings_asked_for() {
    let bin = workspace_binary("wsfleet-gateway");
    let examples = examples();
    assert!(examples.len() >= 3, "examples found: {}", examples.len());
    for (path, fleet) in examples {
        let dir = TempDir::new("contract");
        let config = runnable(gateway_config(&fleet), &dir);
        let text = toml::to_string(&config).expect("TOML");
        let file = dir.file("gateway.toml", &text);
        // A Redis that is not there: the node starts with its backplane down and still reports
        // its settings (no Redis is needed to check them).
        let redis_url = match fleet.spec.backplane {
            Some(_) => "redis://127.0.0.1:1/",
            None => "",
        };
        let gateway = Gateway::start(
            bin.to_str().expect("path"),
            &["--config", file.to_str().expect("path")],
            &[
                ("NODE_ID", "contract-node"),
                ("WSFLEET_REDIS_URL", redis_url),
            ],
        );
        let reply = gateway.admin("GET", "/status", None, "");
        assert_eq!(reply.status, 200, "{path}: /status");
        let report: StatusReport = serde_json::from_str(&reply.body).expect("a status report");
        let reported = report.settings.expect("the report carries the settings");
        assert_eq!(reported.node_id.as_deref(), Some("contract-node"));
        let asked = serde_json::to_value(&config).expect("JSON");
        let running = serde_json::to_value(&reported).expect("JSON");
        let mut checked = 0;
        for (key, value) in asked.as_object().expect("an object") {
            if OWN_KEYS.contains(&key.as_str()) {
                continue;
            }
            assert_eq!(running.get(key), Some(value), "{path}: {key} in\n{text}");
            checked += 1;
        }
        assert!(checked >= 15, "{path}: only {checked} settings compared");
        assert_eq!(
            Some(report.max_connections),
            config.max_connections.and_then(|n| u64::try_from(n).ok())
        );
        eprintln!("{path}: {checked} settings as asked");
    }
}

#[test]
fn a_misspelled_key_stops_the_node_at_start_and_names_the_key() {
    let bin = workspace_binary("wsfleet-gateway");
    let dir = TempDir::new("contract-typo");
    let (_, fleet) = examples().into_iter().next().expect("an example");
    let text = toml::to_string(&runnable(gateway_config(&fleet), &dir)).expect("TOML");
    let text = text.replace("max_connections", "max_conections");
    let file = dir.file("gateway.toml", &text);
    let mut child = Command::new(&bin)
        .args(["--config", file.to_str().expect("path")])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--api-listen", "127.0.0.1:0"])
        .env_remove("WSFLEET_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the gateway");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway kept running with a misspelled key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(!status.success(), "exit status {status}");
    assert!(
        stderr.contains("unknown field `max_conections`") && stderr.contains("gateway.toml"),
        "the error names the key and the file: {stderr}"
    );
}
