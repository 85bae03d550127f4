//! The wsfleet operator process: parses flags, starts logging and the health/metrics server,
//! then runs the fleet controller while this replica holds the leader lease.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tracing::{info, warn};
use wsfleet_operator::controller::{self, Scope};
use wsfleet_operator::health::{DEFAULT_STALL, Health};
use wsfleet_operator::leadership::lead_while_elected;
use wsfleet_operator::lease::{Elector, LeaseConfig};
use wsfleet_operator::metrics::Metrics;
use wsfleet_operator::namespace::{SERVICE_ACCOUNT_NAMESPACE, own_namespace};
use wsfleet_operator::reconcile::Context;
use wsfleet_operator::resources::sysctl::KubeVersion;
use wsfleet_operator::telemetry::{self, LogFormat};

/// Kubernetes operator that runs fleets of wsfleet WebSocket gateway nodes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the /healthz and /metrics server.
    #[arg(long, env = "WSFLEET_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Log line format.
    #[arg(long, env = "WSFLEET_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WSFLEET_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "wsfleet-operator")]
    lease_name: String,
    /// The operator's own namespace (the chart sets it from the downward API). Default: the
    /// service account's namespace file, else `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    operator_namespace: Option<String>,
    /// Namespace of the Lease. Default: the operator's own namespace.
    #[arg(long)]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a lease stays valid without renewal; a standby takes over after this.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_duration_seconds: u64,
    /// Run the controller without leader election (a single replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// Seconds an election round or a reconcile may take before /healthz fails (the kubelet
    /// then restarts the process).
    #[arg(long, default_value_t = DEFAULT_STALL.as_secs(),
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    stall_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    // kube's TLS uses ring; say so, in case another crate in the build brought aws-lc-rs too.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // Health and metrics answer before the first API call, which may wait on the API server.
    let health = Health::new(Duration::from_secs(args.stall_seconds));
    tokio::spawn(wsfleet_operator::http::serve(
        listener,
        metrics.clone(),
        health.clone(),
    ));
    let server = server_version(&client).await;
    info!(listen = %args.listen, kubernetes = %server, "wsfleet operator starting");

    let scope = match &args.namespace {
        Some(ns) => Scope::Namespace(ns.clone()),
        None => Scope::All,
    };
    let own_namespace = own_namespace(
        args.operator_namespace.as_deref(),
        Path::new(SERVICE_ACCOUNT_NAMESPACE),
    )
    .unwrap_or_else(|| {
        warn!("own namespace unknown (no POD_NAMESPACE, not in a pod): using \"default\"");
        "default".to_string()
    });
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        health.clone(),
        server,
        own_namespace.clone(),
    ));
    if args.no_leader_election {
        metrics.leader.set(1);
        tokio::select! {
            () = controller::run(ctx, scope) => {}
            () = shutdown_signal() => info!("shutting down"),
        }
        return Ok(());
    }

    let identity = args.identity.clone().unwrap_or_else(random_identity);
    let config = LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone().unwrap_or(own_namespace),
        identity,
        duration: Duration::from_secs(args.lease_duration_seconds),
    };
    let elector = Elector::new(client, config);
    lead_while_elected(elector, metrics, health, shutdown_signal(), move || {
        controller::run(ctx.clone(), scope.clone())
    })
    .await;
    Ok(())
}

/// The cluster version, or the oldest supported one (the conservative choice for sysctls) when
/// the server does not say.
async fn server_version(client: &kube::Client) -> KubeVersion {
    match client.apiserver_version().await {
        Ok(info) => KubeVersion::parse(&info.major, &info.minor).unwrap_or_else(|| {
            warn!(major = %info.major, minor = %info.minor, "unparsable server version");
            KubeVersion::OLDEST
        }),
        Err(e) => {
            warn!(error = %e, "could not read the server version");
            KubeVersion::OLDEST
        }
    }
}

fn random_identity() -> String {
    format!(
        "wsfleet-operator-{}",
        wsfleet_operator::resources::secret::new_token()[..8].to_owned()
    )
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
