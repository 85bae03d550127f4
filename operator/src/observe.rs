//! What the operator sees of a fleet: its gateway pods, reduced to the facts decisions need,
//! and each node's own report from its admin `/status`. Listing is by the fleet's selector
//! labels; the conversion from a `Pod` is pure and tested. Nodes are asked concurrently (a
//! bounded number at once); one that does not answer is marked unreachable, never guessed.
//! Also whether the cluster can hold a PodMonitor at all.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use crate::crd::WebSocketFleet;
use crate::decide::facts::{ObservedPod, PodPhase};
use crate::gateway_client::GatewayClient;
use crate::resources::{ADMIN_PORT, config_map_prefix, selector_string};

/// Nodes asked for their `/status` at once: enough that a large fleet is read within a few
/// timeouts, few enough not to open hundreds of sockets per reconcile.
pub const STATUS_CONCURRENCY: usize = 32;

/// Where a pod's admin API is. The default is the pod IP and port 9090; tests map pods to
/// loopback addresses of real gateway processes.
pub type AdminAddress = Arc<dyn Fn(&Pod) -> Option<SocketAddr> + Send + Sync>;

/// The admin address of a pod in a cluster: `<pod IP>:9090`.
pub fn pod_admin_address() -> AdminAddress {
    Arc::new(|pod: &Pod| {
        let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
        Some(SocketAddr::new(ip, u16::try_from(ADMIN_PORT).ok()?))
    })
}

/// Whether `fleet` is the controller of `object`. Labels alone could match someone else's
/// objects; the controller owner reference cannot.
pub fn controlled_by(object: &impl Resource, fleet: &WebSocketFleet) -> bool {
    let Some(uid) = fleet.meta().uid.as_deref() else {
        return false;
    };
    object.meta().owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.controller == Some(true) && r.uid == uid)
    })
}

/// The fleet's gateway pods, sorted by name, each with its node's `/status` when it has an
/// admin address and its process has not exited.
pub async fn pods(
    api: &Api<Pod>,
    fleet: &WebSocketFleet,
    gateway: &GatewayClient,
    address: &AdminAddress,
) -> Result<Vec<ObservedPod>, kube::Error> {
    let list = api
        .list(&ListParams::default().labels(&selector_string(fleet)))
        .await?;
    let seen: Vec<ObservedPod> = list
        .items
        .iter()
        .filter(|pod| controlled_by(*pod, fleet))
        .map(|pod| ObservedPod {
            admin: address(pod),
            ..ObservedPod::from_pod(pod)
        })
        .collect();
    let mut pods: Vec<ObservedPod> = futures::stream::iter(seen)
        .map(|pod| ask(gateway, pod))
        .buffer_unordered(STATUS_CONCURRENCY)
        .collect()
        .await;
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}

async fn ask(gateway: &GatewayClient, pod: ObservedPod) -> ObservedPod {
    if matches!(pod.phase, PodPhase::Failed | PodPhase::Succeeded) {
        return pod;
    }
    let Some(addr) = pod.admin else {
        return pod;
    };
    let answer = gateway.status(addr).await.map_err(|e| e.to_string());
    pod.with_report(answer)
}

/// Names of the fleet's gateway ConfigMaps (one per config version still around): those it
/// controls whose name has the config prefix.
pub async fn config_maps(
    api: &Api<ConfigMap>,
    fleet: &WebSocketFleet,
) -> Result<Vec<String>, kube::Error> {
    let list = api
        .list(&ListParams::default().labels(&selector_string(fleet)))
        .await?;
    let prefix = config_map_prefix(fleet);
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter(|cm| controlled_by(*cm, fleet) && cm.name_any().starts_with(&prefix))
        .map(|cm| cm.name_any())
        .collect();
    names.sort();
    Ok(names)
}

/// Whether the cluster serves the PodMonitor kind (the Prometheus Operator's CRDs are
/// installed), from API discovery: a group the server does not know answers 404.
pub async fn serves_pod_monitors(client: &kube::Client) -> Result<bool, kube::Error> {
    let resource = crate::resources::monitor::pod_monitor_resource();
    match client.list_api_group_resources(&resource.api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == resource.plural)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("chat-r1-aaaaa".into());
        pod
    }

    #[test]
    fn only_objects_the_fleet_controls_are_its_own() {
        let mut fleet = crate::resources::testing::minimal();
        let mut mine = pod();
        mine.metadata.owner_references = crate::resources::owner_reference(&fleet).map(|r| vec![r]);
        assert!(controlled_by(&mine, &fleet));
        let lookalike = pod();
        assert!(
            !controlled_by(&lookalike, &fleet),
            "labels alone do not make it ours"
        );
        fleet.metadata.uid = Some("other".into());
        assert!(!controlled_by(&mine, &fleet));
    }
}
