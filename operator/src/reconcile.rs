//! One reconcile of one fleet: observe its pods → decide → act; plus the error policy that
//! retries a failing fleet with exponential backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use tracing::{info, warn};

use crate::act::{self, ActError};
use crate::crd::WebSocketFleet;
use crate::decide::{self, Observation, names::RandomNames};
use crate::gateway_client::{DEFAULT_TIMEOUT, GatewayClient};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::observe::{self, AdminAddress, pod_admin_address};
use crate::resources::FIELD_MANAGER;
use crate::resources::sysctl::KubeVersion;

/// How often a healthy fleet is looked at again even without a change.
const RESYNC: Duration = Duration::from_secs(60);
/// Shortest delay before a fleet is looked at again by itself (a due time just passed must not
/// spin the loop).
const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// First retry delay after a failure; doubles per consecutive failure.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest retry delay.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Progress marks for `/healthz`.
    pub health: Health,
    /// Cluster version, for the sysctls the kubelet allows.
    pub server: KubeVersion,
    /// Where a pod's admin API answers (pod IP:9090 in a cluster).
    pub admin_address: AdminAddress,
    /// Timeout of each call to a node's admin API.
    pub gateway_timeout: Duration,
    /// The operator's own namespace: the fleets' NetworkPolicies admit it to the admin port.
    pub operator_namespace: String,
    /// Consecutive failures per fleet (namespace/name), for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        metrics: Metrics,
        health: Health,
        server: KubeVersion,
        operator_namespace: String,
    ) -> Context {
        let recorder = Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER));
        Context {
            client,
            recorder,
            metrics,
            health,
            server,
            admin_address: pod_admin_address(),
            gateway_timeout: DEFAULT_TIMEOUT,
            operator_namespace,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The same context reaching admin APIs elsewhere (tests run gateways on loopback).
    pub fn with_admin_address(mut self, address: AdminAddress) -> Context {
        self.admin_address = address;
        self
    }

    /// The same context with another admin API timeout.
    pub fn with_gateway_timeout(mut self, timeout: Duration) -> Context {
        self.gateway_timeout = timeout;
        self
    }

    fn record_outcome(&self, key: String, failed: bool) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 1;
        };
        if failed {
            let n = failures.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            failures.remove(&key);
            0
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("observing the fleet: {0}")]
    Observe(#[source] kube::Error),
    #[error(transparent)]
    Act(#[from] ActError),
}

impl Error {
    /// Short label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Observe(_) => "observe",
            Error::Act(_) => "act",
        }
    }
}

fn key(fleet: &WebSocketFleet) -> String {
    format!(
        "{}/{}",
        fleet.namespace().unwrap_or_default(),
        fleet.name_any()
    )
}

/// Reconciles one fleet.
pub async fn reconcile(fleet: Arc<WebSocketFleet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started();
    let _in_flight = ctx.health.reconcile_started();
    if fleet.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove pods and objects.
        return Ok(Action::await_change());
    }
    let namespace = fleet.namespace().unwrap_or_else(|| "default".into());
    let token = act::drain_token(&ctx.client, &fleet).await?;
    let gateway = GatewayClient::new(token).with_timeout(ctx.gateway_timeout);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let observed = observe::pods(&pods, &fleet, &gateway, &ctx.admin_address)
        .await
        .map_err(Error::Observe)?;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let config_maps = observe::config_maps(&config_maps, &fleet)
        .await
        .map_err(Error::Observe)?;
    // Discovery only for a fleet that wants a PodMonitor.
    let pod_monitor_api = fleet.spec.monitoring.pod_monitor.enabled
        && observe::serves_pod_monitors(&ctx.client)
            .await
            .map_err(Error::Observe)?;
    let plan = decide::decide(
        Observation {
            fleet: &fleet,
            pods: &observed,
            config_maps: &config_maps,
            server: ctx.server,
            pod_monitor_api,
            now: jiff::Timestamp::now(),
        },
        &mut RandomNames,
    );
    if !plan.create.is_empty() || !plan.remove.is_empty() || !plan.drain.is_empty() {
        info!(
            fleet = %key(&fleet),
            create = plan.create.len(),
            drain = plan.drain.len(),
            remove = plan.remove.len(),
            desired = plan.status.desired_replicas,
            "acting on fleet"
        );
    }
    let publish_token_due = act::execute(
        &ctx.client,
        &ctx.recorder,
        &gateway,
        &fleet,
        &plan,
        &ctx.operator_namespace,
    )
    .await?;
    ctx.record_outcome(key(&fleet), false);
    let mut requeue = plan.requeue.unwrap_or(RESYNC);
    if let Some(due) = publish_token_due {
        requeue = requeue.min(due.max(MIN_REQUEUE));
    }
    Ok(Action::requeue(requeue))
}

/// Retries a failed fleet after a delay that doubles with each consecutive failure.
pub fn error_policy(fleet: Arc<WebSocketFleet>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.kind());
    let attempt = ctx.record_outcome(key(&fleet), true);
    let delay = backoff(attempt);
    warn!(fleet = %key(&fleet), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Delay before retry number `attempt` (1-based): 2s, 4s, 8s … capped at 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1u32 << exponent).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}
