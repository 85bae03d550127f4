//! Builders of the Kubernetes objects a fleet owns. Each is a pure function of the fleet (and,
//! where it matters, the cluster version); `act` applies what they return.
//!
//! Naming, labels and the owner reference are shared here so every object agrees on them.

pub mod config;
pub mod monitor;
pub mod network_policy;
pub mod pdb;
pub mod pod;
pub mod secret;
pub mod service;
pub mod sysctl;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::WebSocketFleet;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "wsfleet-operator";
/// Label carrying the fleet name; every owned object has it.
pub const FLEET_LABEL: &str = "wsfleet.io/fleet";
/// Label carrying the pod-template revision of a gateway pod.
pub const REVISION_LABEL: &str = "wsfleet.io/revision";
/// Label the operator sets on a pod it asked to drain; the scale subresource's selector leaves
/// these pods out so an HPA averaging over the fleet is not skewed by nodes on their way out.
pub const DRAINING_LABEL: &str = "wsfleet.io/draining";
/// Annotation with the RFC 3339 time by which a draining pod is deleted whatever it holds.
pub const DRAIN_DEADLINE_ANNOTATION: &str = "wsfleet.io/drain-deadline";
/// `app.kubernetes.io/name` of gateway pods and the objects around them.
pub const APP_NAME: &str = "wsfleet-gateway";
/// WebSocket port of the gateway.
pub const WS_PORT: i32 = 8080;
/// Admin port of the gateway (health, status, drain, metrics).
pub const ADMIN_PORT: i32 = 9090;
/// Publish API port of the gateway (`POST /api/v1/publish|send`, for app services).
pub const API_PORT: i32 = 9091;
/// Fleet annotation whose new value asks for a new publish token.
pub const ROTATE_PUBLISH_TOKEN_ANNOTATION: &str = "wsfleet.io/rotate-publish-token";

/// Name of the client Service (and of the PodDisruptionBudget, NetworkPolicy and PodMonitor).
pub fn client_service_name(fleet: &WebSocketFleet) -> String {
    fleet.name_any()
}

/// Name of the headless Service that gives each node a DNS name.
pub fn headless_service_name(fleet: &WebSocketFleet) -> String {
    format!("{}-nodes", fleet.name_any())
}

/// Name of the ConfigMap holding a given `gateway.toml`: named by its content, so each config
/// version is its own immutable object and a running pod's config never changes under it.
pub fn config_map_name(fleet: &WebSocketFleet, gateway_toml: &str) -> String {
    format!(
        "{}{}",
        config_map_prefix(fleet),
        short_hash(&[gateway_toml.as_bytes()])
    )
}

/// Common prefix of the fleet's config ConfigMaps.
pub fn config_map_prefix(fleet: &WebSocketFleet) -> String {
    format!("{}-gateway-", fleet.name_any())
}

/// First 10 hex digits of the SHA-256 of `parts`: stable across releases and platforms.
pub fn short_hash(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Name of the Secret holding the drain token (the operator's: `POST`/`DELETE /drain`).
pub fn drain_secret_name(fleet: &WebSocketFleet) -> String {
    format!("{}-drain-token", fleet.name_any())
}

/// Name of the Secret holding the publish token (app services': the publish API).
pub fn publish_secret_name(fleet: &WebSocketFleet) -> String {
    format!("{}-publish-token", fleet.name_any())
}

/// Labels that select a fleet's gateway pods.
pub fn selector_labels(fleet: &WebSocketFleet) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        (FLEET_LABEL.to_string(), fleet.name_any()),
    ])
}

/// The selector labels as a label-selector string (`k=v,k=v`).
pub fn selector_string(fleet: &WebSocketFleet) -> String {
    selector_labels(fleet)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The selector of the fleet's serving pods, for the scale subresource: the fleet's pods
/// without the ones being drained.
pub fn serving_selector_string(fleet: &WebSocketFleet) -> String {
    format!("{},!{DRAINING_LABEL}", selector_string(fleet))
}

/// The recommended `app.kubernetes.io/*` labels plus the fleet label.
pub fn common_labels(fleet: &WebSocketFleet) -> BTreeMap<String, String> {
    let mut labels = selector_labels(fleet);
    labels.extend([
        ("app.kubernetes.io/instance".to_string(), fleet.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            "gateway".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            FIELD_MANAGER.to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "wsfleet".to_string(),
        ),
    ]);
    labels
}

/// Owner reference making the fleet the controller of an object, so deleting the fleet
/// deletes it and changes to it requeue the fleet. `None` when the fleet has no uid yet.
pub fn owner_reference(fleet: &WebSocketFleet) -> Option<OwnerReference> {
    fleet.controller_owner_ref(&())
}

/// Metadata of an owned object: name, namespace, common labels, owner reference.
pub fn owned_meta(fleet: &WebSocketFleet, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: fleet.namespace(),
        labels: Some(common_labels(fleet)),
        owner_references: owner_reference(fleet).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fleet fixture shared by the builder tests.

    use crate::crd::WebSocketFleet;

    /// A stored fleet (namespace and uid set) from a JSON spec.
    pub fn fleet(spec: serde_json::Value) -> WebSocketFleet {
        let mut fleet = WebSocketFleet::new(
            "chat",
            serde_json::from_value(spec).expect("test spec deserializes"),
        );
        fleet.metadata.namespace = Some("prod".into());
        fleet.metadata.uid = Some("uid-1".into());
        fleet.metadata.generation = Some(1);
        fleet
    }

    /// The smallest valid fleet.
    pub fn minimal() -> WebSocketFleet {
        fleet(serde_json::json!({"image": "gw:1", "auth": {"anonymous": true}}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_objects_carry_labels_and_controller_reference() {
        let fleet = testing::minimal();
        let meta = owned_meta(&fleet, "x".into());
        let labels = meta.labels.expect("labels");
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
            FLEET_LABEL,
        ] {
            assert!(labels.contains_key(key), "missing label {key}");
        }
        assert_eq!(labels[FLEET_LABEL], "chat");
        assert_eq!(meta.namespace.as_deref(), Some("prod"));
        let owner = &meta.owner_references.expect("owner refs")[0];
        assert_eq!(owner.kind, "WebSocketFleet");
        assert_eq!(owner.api_version, "wsfleet.io/v1alpha1");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            selector_string(&fleet),
            "app.kubernetes.io/name=wsfleet-gateway,wsfleet.io/fleet=chat"
        );
    }
}
