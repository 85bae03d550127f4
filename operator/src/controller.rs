//! Wires the reconciler into kube's runtime `Controller`: watch `WebSocketFleet`s and the
//! objects they own (pods, Services, ConfigMaps, PodDisruptionBudgets, NetworkPolicies, selected
//! by the managed-by label so the caches hold only the operator's objects).
//!
//! PodMonitors are not watched: their CRD may be missing (a watch would fail until it exists).
//! Drift in one is repaired by the next resync, within a minute.
//!
//! Secrets are deliberately not watched: that would need list/watch on every Secret in the
//! cluster. The drain- and publish-token Secrets are checked on every reconcile (at least once a minute).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use tracing::{debug, warn};

use crate::crd::WebSocketFleet;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::resources::FIELD_MANAGER;

/// Which namespaces the operator watches.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Namespace(String),
}

fn api<K>(client: &kube::Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Runs the controller until its stream ends (shutdown) or the future is dropped (lost lease).
pub async fn run(ctx: Arc<Context>, scope: Scope) {
    let client = ctx.client.clone();
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    Controller::new(
        api::<WebSocketFleet>(&client, &scope),
        watcher::Config::default(),
    )
    .owns(api::<Pod>(&client, &scope), owned.clone())
    .owns(api::<Service>(&client, &scope), owned.clone())
    .owns(api::<ConfigMap>(&client, &scope), owned.clone())
    .owns(api::<PodDisruptionBudget>(&client, &scope), owned.clone())
    .owns(api::<NetworkPolicy>(&client, &scope), owned)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((fleet, _)) => debug!(fleet = %fleet, "reconciled"),
            Err(e) => warn!(error = %e, "controller error"),
        }
    })
    .await;
}
