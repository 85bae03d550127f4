//! A minimal real HTTP server speaking the gateway admin contract (`GET /status`,
//! `POST`/`DELETE /drain` with the bearer token) for reconcile tests that need nodes to answer
//! without running gateway processes. It holds a connection count the test sets; a drain moves
//! it to `draining`, and `clients_left()` empties it as reconnecting clients would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct NodeState {
    draining: bool,
    connections: i64,
    drains: Vec<Value>,
}

/// One stand-in node.
pub struct AdminNode {
    pub addr: SocketAddr,
    state: Arc<Mutex<NodeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AdminNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    name: String,
    token: String,
    state: Arc<Mutex<NodeState>>,
}

impl AdminNode {
    pub async fn start(name: &str, token: &str, connections: i64) -> AdminNode {
        let state = Arc::new(Mutex::new(NodeState {
            connections,
            ..NodeState::default()
        }));
        let shared = Shared {
            name: name.into(),
            token: token.into(),
            state: state.clone(),
        };
        let app = Router::new()
            .route("/status", get(status))
            .route("/drain", axum::routing::post(drain).delete(undrain))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AdminNode { addr, state, task }
    }

    pub fn draining(&self) -> bool {
        self.state.lock().expect("state").draining
    }

    /// Drain requests received, as JSON bodies.
    pub fn drains(&self) -> Vec<Value> {
        self.state.lock().expect("state").drains.clone()
    }

    /// Its clients reconnected elsewhere.
    pub fn clients_left(&self) {
        self.state.lock().expect("state").connections = 0;
    }
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.token))
}

async fn status(State(shared): State<Shared>) -> ([(&'static str, &'static str); 1], String) {
    let state = shared.state.lock().expect("state");
    let draining = state.draining;
    let body = json!({
        "node": shared.name,
        "version": "test",
        "state": match (draining, state.connections) {
            (false, _) => "serving",
            (true, 0) => "drained",
            (true, _) => "draining",
        },
        "ready": !draining,
        "connections": state.connections,
        "max_connections": 1000,
        "backplane": "memory",
        "drain": if draining {
            json!({"reason": "test", "window_seconds": 1, "deadline_unix_ms": i64::MAX / 2, "remaining": state.connections})
        } else {
            Value::Null
        },
    });
    ([("content-type", "application/json")], body.to_string())
}

async fn drain(State(shared): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    if !authorized(&shared, &headers) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut state = shared.state.lock().expect("state");
    state.draining = true;
    state.drains.push(body);
    StatusCode::ACCEPTED
}

async fn undrain(State(shared): State<Shared>, headers: HeaderMap) -> StatusCode {
    if !authorized(&shared, &headers) {
        return StatusCode::UNAUTHORIZED;
    }
    shared.state.lock().expect("state").draining = false;
    StatusCode::OK
}

/// Stand-in nodes by pod name, and the address function the operator's context uses.
#[derive(Clone, Default)]
pub struct AdminNodes {
    nodes: Arc<Mutex<HashMap<String, Arc<AdminNode>>>>,
}

impl AdminNodes {
    pub fn get(&self, name: &str) -> Option<Arc<AdminNode>> {
        self.nodes.lock().expect("nodes").get(name).cloned()
    }

    pub fn insert(&self, name: &str, node: AdminNode) {
        self.nodes
            .lock()
            .expect("nodes")
            .insert(name.into(), Arc::new(node));
    }

    pub fn all(&self) -> Vec<(String, Arc<AdminNode>)> {
        self.nodes
            .lock()
            .expect("nodes")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn address_fn(&self) -> wsfleet_operator::observe::AdminAddress {
        let nodes = self.nodes.clone();
        Arc::new(move |pod: &k8s_openapi::api::core::v1::Pod| {
            let name = pod.metadata.name.as_deref()?;
            nodes.lock().ok()?.get(name).map(|n| n.addr)
        })
    }
}
