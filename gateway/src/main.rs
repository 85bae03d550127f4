//! `wsfleet-gateway`: reads the config, raises the open-file limit, builds the engine and
//! serves the WebSocket and admin listeners. SIGTERM (or Ctrl-C) starts a drain; the process
//! exits 0 once a drain — from a signal or `POST /drain` — has ended. A second signal exits at
//! once.

use anyhow::Context;
use std::sync::Arc;
use tokio::net::TcpListener;
use wsfleet_gateway::auth::Authenticator;
use wsfleet_gateway::config::Config;
use wsfleet_gateway::credentials::TokenSource;
use wsfleet_gateway::drain::DrainRequest;
use wsfleet_gateway::engine::Engine;
use wsfleet_gateway::node::Node;
use wsfleet_gateway::subscriptions::Subscriptions;
use wsfleet_gateway::{admin, api, server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // One crypto provider for every TLS client in the process (Redis): chosen here rather than
    // left to whichever rustls features the dependency graph happens to enable.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::load()?;
    // Before anything can report the node as up: a SIGTERM from then on must start a drain,
    // not kill the process with the default action.
    let signals = ShutdownSignals::install()?;
    raise_open_file_limit(config.max_connections);
    let engine = Engine::connect(&config, Arc::new(Subscriptions::new())).await?;
    let auth = Authenticator::from_config(&config).context("setting up client authentication")?;
    auth.reload_forever(&config);
    if config.anonymous {
        tracing::warn!("anonymous mode: clients connect without a token (development only)");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding {}", config.admin_listen))?;
    // Without a publish token the API could only refuse: its port stays closed.
    let api_listener = match config.publish_token {
        TokenSource::None => None,
        _ => Some(
            TcpListener::bind(config.api_listen)
                .await
                .with_context(|| format!("binding {}", config.api_listen))?,
        ),
    };
    let ws_addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let api_addr = match &api_listener {
        Some(listener) => listener.local_addr()?.to_string(),
        None => "off".to_owned(),
    };
    let node = Arc::new(Node::new(config, engine, auth).context("loading the node's tokens")?);
    tracing::info!(node = %node.config.node_id, %ws_addr, %admin_addr, %api_addr, "serving");
    // A fixed line on stdout tells supervisors and tests the bound ports (useful with port 0).
    println!("wsfleet-gateway listening ws={ws_addr} admin={admin_addr} api={api_addr}");

    let admin = axum::serve(admin_listener, admin::router(Arc::clone(&node)));
    tokio::spawn(async move {
        if let Err(err) = admin.await {
            tracing::error!(%err, "admin server failed");
        }
    });
    if let Some(api_listener) = api_listener {
        let api = axum::serve(api_listener, api::router(Arc::clone(&node)));
        tokio::spawn(async move {
            if let Err(err) = api.await {
                tracing::error!(%err, "API server failed");
            }
        });
    }
    tokio::spawn(server::serve(Arc::clone(&node), listener));
    tokio::spawn(report_presence(Arc::clone(&node)));
    tokio::select! {
        () = node.lifecycle.drained() => tracing::info!("drained; exiting"),
        () = drain_on_signals(&node, signals) => tracing::warn!("second signal; exiting without waiting for the drain"),
    }
    Ok(())
}

/// Starts a drain with the configured window and timeout on the first SIGTERM or SIGINT (a
/// drain already under way continues unchanged); returns on the second.
async fn drain_on_signals(node: &Arc<Node>, mut signals: ShutdownSignals) {
    signals.recv().await;
    let request = DrainRequest {
        window_seconds: node.config.drain_window.as_secs(),
        deadline_seconds: node.config.drain_timeout.as_secs(),
        reason: Some("node shutting down".to_owned()),
        count: None,
    };
    tracing::info!("shutdown signal; draining");
    node.drain(&request);
    signals.recv().await;
}

/// Keeps the node's presence in the backplane current (connections, cap, lifecycle state).
async fn report_presence(node: Arc<Node>) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        ticks.tick().await;
        let state = node.state().as_str();
        node.engine
            .report_presence(node.connections(), node.config.max_connections, state)
            .await;
    }
}

/// Raises the soft open-file limit to the hard limit; warns when the cap cannot fit.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // Each connection is one descriptor; keep some for listeners, Redis and logs.
            let needed = max_connections as u64 + 64;
            if needed > limit {
                tracing::warn!(
                    limit,
                    max_connections,
                    "max_connections exceeds the open-file limit; upgrades will fail before the cap"
                );
            }
        }
        Err(err) => tracing::warn!(%err, "could not raise the open-file limit"),
    }
}

/// SIGTERM (Kubernetes) and SIGINT (Ctrl-C), listened to from the moment they are installed.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Resolves on the next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
