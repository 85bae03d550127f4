//! Carries out a [`Plan`] against the Kubernetes API and the nodes: server-side apply of the
//! owned objects (field manager `wsfleet-operator`, forced; the NetworkPolicy and PodMonitor
//! deleted when turned off), pod deletes, drains (`POST /drain`
//! then the pod's drain label and deadline), pod creates, the status via apply on the status
//! subresource, and events. Already-done steps (a 404 on delete, a 409 on create, a repeated
//! drain) count as done, so a repeated reconcile is harmless.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::crd::WebSocketFleet;
use crate::decide::{DrainOrder, Note, Plan, PodMonitorStep};
use crate::gateway_client::GatewayClient;
use crate::resources::pod::{GatewayTemplate, pod};
use crate::resources::secret::{
    drain_token_secret, new_token, publish_token_due, publish_token_write, token,
};
use crate::resources::{
    DRAIN_DEADLINE_ANNOTATION, DRAINING_LABEL, FIELD_MANAGER,
    config::config_map,
    drain_secret_name,
    monitor::{pod_monitor, pod_monitor_resource},
    network_policy::{network_policy, network_policy_name},
    pdb::pod_disruption_budget,
    publish_secret_name,
    service::{client_service, headless_service},
};

/// A failed API call and what the operator was doing.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct ActError {
    pub action: String,
    #[source]
    pub source: kube::Error,
}

type Result<T> = std::result::Result<T, ActError>;

fn failed(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ActError {
    let action = action.into();
    move |source| ActError { action, source }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `plan` for `fleet`; `gateway` carries the fleet's drain token; the fleet's
/// NetworkPolicy admits `operator_namespace` to the admin port. Returns when the fleet's
/// publish token next needs a write by itself (the end of a rotation's overlap), if it does.
pub async fn execute(
    client: &kube::Client,
    recorder: &Recorder,
    gateway: &GatewayClient,
    fleet: &WebSocketFleet,
    plan: &Plan,
    operator_namespace: &str,
) -> Result<Option<std::time::Duration>> {
    let namespace = fleet.namespace().unwrap_or_else(|| "default".into());
    let mut failed_drains = Vec::new();
    let mut publish_token_due = None;
    if let Some(template) = &plan.template {
        apply_owned_objects(client, &namespace, fleet, plan.status.desired_replicas).await?;
        publish_token_due = ensure_publish_secret(client, recorder, &namespace, fleet).await?;
        apply_network_policy(client, &namespace, fleet, operator_namespace).await?;
        apply_pod_monitor(client, &namespace, fleet, plan.pod_monitor).await?;
        remove_pods(client, &namespace, plan).await?;
        failed_drains = drain_nodes(client, gateway, &namespace, &plan.drain).await?;
        create_pods(client, &namespace, fleet, template, &plan.create).await?;
        delete_stale_config_maps(client, &namespace, plan).await?;
    }
    write_status(client, &namespace, fleet, plan).await?;
    record_events(recorder, fleet, &plan.events).await;
    record_events(recorder, fleet, &failed_drains).await;
    Ok(publish_token_due)
}

/// Reads the drain token of `fleet`, if its Secret exists yet.
pub async fn drain_token(client: &kube::Client, fleet: &WebSocketFleet) -> Result<Option<String>> {
    let namespace = fleet.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let name = drain_secret_name(fleet);
    let secret = api
        .get_opt(&name)
        .await
        .map_err(failed(format!("get Secret {name}")))?;
    Ok(secret.as_ref().and_then(token))
}

/// Tells each node to drain, then marks its pod (label + deadline) so the scale selector
/// leaves it out and a restarted operator knows the drain is its own. A node that refuses is
/// left unmarked and reported; the next round chooses again. A failed pod patch fails the
/// reconcile, which retries: the drain call itself is idempotent.
async fn drain_nodes(
    client: &kube::Client,
    gateway: &GatewayClient,
    ns: &str,
    orders: &[DrainOrder],
) -> Result<Vec<Note>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut failures = Vec::new();
    for order in orders {
        info!(pod = %order.pod, window = order.request.window_seconds, reason = order.request.reason(), "draining gateway node");
        if let Err(e) = gateway.drain(order.address, &order.request).await {
            warn!(pod = %order.pod, error = %e, "drain request failed");
            failures.push(Note {
                warning: true,
                reason: "DrainFailed",
                message: format!("Could not start the drain of {}: {e}", order.pod),
            });
            continue;
        }
        let patch = serde_json::json!({
            "metadata": {
                "labels": { DRAINING_LABEL: "true" },
                "annotations": { DRAIN_DEADLINE_ANNOTATION: order.deadline.to_string() },
            }
        });
        match api
            .patch(&order.pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(failed(format!("mark Pod {} draining", order.pod))(e)),
        }
    }
    Ok(failures)
}

async fn apply_owned_objects(
    client: &kube::Client,
    ns: &str,
    fleet: &WebSocketFleet,
    desired: i32,
) -> Result<()> {
    apply::<ConfigMap>(client, ns, &config_map(fleet)).await?;
    ensure_drain_secret(client, ns, fleet).await?;
    apply::<Service>(client, ns, &client_service(fleet)).await?;
    apply::<Service>(client, ns, &headless_service(fleet)).await?;
    apply::<PodDisruptionBudget>(client, ns, &pod_disruption_budget(fleet, desired)).await?;
    Ok(())
}

/// Applies the fleet's NetworkPolicy, or deletes it when the fleet turned it off (a 404 is
/// the usual answer then: one call per reconcile of such a fleet).
async fn apply_network_policy(
    client: &kube::Client,
    ns: &str,
    fleet: &WebSocketFleet,
    operator_namespace: &str,
) -> Result<()> {
    if fleet.spec.network_policy.enabled {
        return apply::<NetworkPolicy>(client, ns, &network_policy(fleet, operator_namespace))
            .await;
    }
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let name = network_policy_name(fleet);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if status_code(&e) == Some(404) => {}
        Err(e) => return Err(failed(format!("delete NetworkPolicy {name}"))(e)),
    }
    Ok(())
}

/// Applies or deletes the fleet's PodMonitor as the plan says. A 404 on apply means the
/// PodMonitor CRD went away since discovery: logged, and the next reconcile reports it. A 404
/// on delete means it is already gone.
async fn apply_pod_monitor(
    client: &kube::Client,
    ns: &str,
    fleet: &WebSocketFleet,
    step: PodMonitorStep,
) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &pod_monitor_resource());
    let monitor = pod_monitor(fleet);
    let name = monitor.name_any();
    match step {
        PodMonitorStep::Leave => Ok(()),
        PodMonitorStep::Apply => {
            match api
                .patch(&name, &apply_params(), &Patch::Apply(&monitor))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if status_code(&e) == Some(404) => {
                    warn!(podmonitor = %name, error = %e, "the PodMonitor API is gone");
                    Ok(())
                }
                Err(e) => Err(failed(format!("apply PodMonitor {name}"))(e)),
            }
        }
        PodMonitorStep::Delete => match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(failed(format!("delete PodMonitor {name}"))(e)),
        },
    }
}

/// Server-side applies `object` (named by its metadata) in `ns`.
async fn apply<K>(client: &kube::Client, ns: &str, object: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = object.name_any();
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(failed(format!("apply {} {name}", K::kind(&()))))?;
    Ok(())
}

/// Creates the drain-token Secret once; an existing token is never replaced, because the
/// operator authenticates drains with it and is its only holder.
async fn ensure_drain_secret(
    client: &kube::Client,
    ns: &str,
    fleet: &WebSocketFleet,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = drain_secret_name(fleet);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(failed(format!("get Secret {name}")))?;
    match existing {
        Some(secret) if token(&secret).is_some() => Ok(()),
        Some(_) => apply::<Secret>(client, ns, &drain_token_secret(fleet, &new_token())).await,
        None => {
            let secret = drain_token_secret(fleet, &new_token());
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => Ok(()),
                Err(e) if status_code(&e) == Some(409) => Ok(()),
                Err(e) => Err(failed(format!("create Secret {name}"))(e)),
            }
        }
    }
}

/// Creates, rotates and trims the publish-token Secret as [`publish_token_write`] decides.
/// A write replaces the Secret as read (its resourceVersion), so a concurrent edit makes this
/// reconcile fail and retry rather than be overwritten.
async fn ensure_publish_secret(
    client: &kube::Client,
    recorder: &Recorder,
    ns: &str,
    fleet: &WebSocketFleet,
) -> Result<Option<std::time::Duration>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = publish_secret_name(fleet);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(failed(format!("get Secret {name}")))?;
    let now = jiff::Timestamp::now();
    let Some(write) = publish_token_write(fleet, existing.as_ref(), now, new_token) else {
        return Ok(existing.and_then(|s| publish_token_due(&s, now)));
    };
    let mut secret = write.secret;
    let result = match &existing {
        Some(current) => {
            secret.metadata.resource_version = current.resource_version();
            api.replace(&name, &PostParams::default(), &secret).await
        }
        None => api.create(&PostParams::default(), &secret).await,
    };
    match result {
        Ok(_) => {}
        // Created meanwhile (another replica's last reconcile): the next round sees it.
        Err(e) if existing.is_none() && status_code(&e) == Some(409) => return Ok(None),
        Err(e) => return Err(failed(format!("write Secret {name}"))(e)),
    }
    if write.rotated {
        info!(secret = %name, "publish token rotated");
        let overlap = fleet.spec.publish_token.rotation_overlap_seconds;
        let note = Note {
            warning: false,
            reason: "PublishTokenRotated",
            message: format!(
                "Secret {name} holds a new publish token; the previous one is accepted for {overlap} s"
            ),
        };
        record_events(recorder, fleet, std::slice::from_ref(&note)).await;
    }
    Ok(publish_token_due(&secret, now))
}

async fn remove_pods(client: &kube::Client, ns: &str, plan: &Plan) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    for removal in &plan.remove {
        info!(pod = %removal.pod, reason = ?removal.reason, "deleting gateway pod");
        match api.delete(&removal.pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(failed(format!("delete Pod {}", removal.pod))(e)),
        }
    }
    Ok(())
}

async fn delete_stale_config_maps(client: &kube::Client, ns: &str, plan: &Plan) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in &plan.stale_config_maps {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(failed(format!("delete ConfigMap {name}"))(e)),
        }
    }
    Ok(())
}

async fn create_pods(
    client: &kube::Client,
    ns: &str,
    fleet: &WebSocketFleet,
    template: &GatewayTemplate,
    names: &[String],
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    for name in names {
        info!(pod = %name, revision = %template.revision, "creating gateway pod");
        match api
            .create(&PostParams::default(), &pod(fleet, template, name))
            .await
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(409) => {}
            Err(e) => return Err(failed(format!("create Pod {name}"))(e)),
        }
    }
    Ok(())
}

async fn write_status(
    client: &kube::Client,
    ns: &str,
    fleet: &WebSocketFleet,
    plan: &Plan,
) -> Result<()> {
    let api: Api<WebSocketFleet> = Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": WebSocketFleet::api_version(&()),
        "kind": WebSocketFleet::kind(&()),
        "status": plan.status,
    });
    let name = fleet.name_any();
    api.patch_status(&name, &apply_params(), &Patch::Apply(&body))
        .await
        .map_err(failed(format!("apply status of WebSocketFleet {name}")))?;
    Ok(())
}

/// Events are best effort: a fleet is not failed because an event could not be written.
async fn record_events(recorder: &Recorder, fleet: &WebSocketFleet, notes: &[Note]) {
    let reference = fleet.object_ref(&());
    for note in notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.to_string(),
            note: Some(note.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = note.reason, "could not record event");
        }
    }
}

/// The HTTP status of an API error response, if it was one.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
