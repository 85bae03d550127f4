//! The fleet's NetworkPolicy: which peers may reach which gateway port. Clients reach `ws` from
//! anywhere; the admin port (health, status, drain, `/metrics`) only from the operator's own
//! namespace plus `spec.networkPolicy.metricsFrom`; the publish API (`api`) only from
//! namespaces labelled `wsfleet.io/api-access: "true"`, or `spec.networkPolicy.apiFrom`.
//!
//! Ports are named, so the policy follows the container ports wherever their numbers go. Only
//! ingress is limited: the nodes' own connections (Redis, DNS) are left to other policies.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{owned_meta, selector_labels};
use crate::crd::WebSocketFleet;

/// Namespace label that admits a namespace's pods to the publish API by default.
pub const API_ACCESS_LABEL: &str = "wsfleet.io/api-access";
/// Name of the gateway's container port serving the publish API (`POST /api/v1/publish|send`).
const API_PORT_NAME: &str = "api";
/// Label every namespace carries with its own name (set by the API server since 1.21).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Name of the fleet's NetworkPolicy.
pub fn network_policy_name(fleet: &WebSocketFleet) -> String {
    super::client_service_name(fleet)
}

/// The NetworkPolicy of `fleet`, for an operator running in `operator_namespace` (whose drains
/// and status calls must keep reaching the admin port).
pub fn network_policy(fleet: &WebSocketFleet, operator_namespace: &str) -> NetworkPolicy {
    let settings = &fleet.spec.network_policy;
    let mut admin_from = vec![namespace_peer(NAMESPACE_NAME_LABEL, operator_namespace)];
    admin_from.extend(settings.metrics_from.iter().cloned());
    let api_from = settings
        .api_from
        .clone()
        .unwrap_or_else(|| vec![namespace_peer(API_ACCESS_LABEL, "true")]);
    let mut ingress = vec![
        // No `from`: any source, inside or outside the cluster.
        rule("ws", None),
        rule("admin", Some(admin_from)),
    ];
    // An ingress rule with an empty `from` admits every source, so "nobody" is no rule at all.
    if !api_from.is_empty() {
        ingress.push(rule(API_PORT_NAME, Some(api_from)));
    }
    NetworkPolicy {
        metadata: owned_meta(fleet, network_policy_name(fleet)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(fleet)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    }
}

fn rule(port: &str, from: Option<Vec<NetworkPolicyPeer>>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from,
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::String(port.into())),
            protocol: Some("TCP".into()),
            ..NetworkPolicyPort::default()
        }]),
    }
}

/// Every pod of the namespaces labelled `key=value`.
fn namespace_peer(key: &str, value: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;
    use serde_json::{Value, json};

    /// Each rule as (port name, its `from` as JSON; `null` = any source).
    fn rules(policy: &NetworkPolicy) -> Vec<(String, Value)> {
        policy
            .spec
            .as_ref()
            .and_then(|s| s.ingress.clone())
            .expect("ingress rules")
            .into_iter()
            .map(|r| {
                let ports = r.ports.expect("ports");
                assert_eq!(ports.len(), 1);
                assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
                let Some(IntOrString::String(name)) = ports[0].port.clone() else {
                    panic!("ports are named: {ports:?}");
                };
                (name, serde_json::to_value(r.from).expect("json"))
            })
            .collect()
    }

    fn ns(key: &str, value: &str) -> Value {
        json!({"namespaceSelector": {"matchLabels": {key: value}}})
    }

    #[test]
    fn ports_are_opened_to_their_own_peers() {
        let operator = ns("kubernetes.io/metadata.name", "wsfleet-system");
        let prometheus = ns("kubernetes.io/metadata.name", "monitoring");
        let publisher = json!({"podSelector": {"matchLabels": {"app": "publisher"}}});
        // (case, spec.networkPolicy, expected (port, from) rules)
        let cases = [
            (
                "defaults",
                json!({}),
                vec![
                    ("ws", Value::Null),
                    ("admin", json!([operator])),
                    ("api", json!([ns("wsfleet.io/api-access", "true")])),
                ],
            ),
            (
                "metrics from the Prometheus namespace",
                json!({"metricsFrom": [prometheus]}),
                vec![
                    ("ws", Value::Null),
                    ("admin", json!([operator, prometheus])),
                    ("api", json!([ns("wsfleet.io/api-access", "true")])),
                ],
            ),
            (
                "api from chosen pods only",
                json!({"apiFrom": [publisher]}),
                vec![
                    ("ws", Value::Null),
                    ("admin", json!([operator])),
                    ("api", json!([publisher])),
                ],
            ),
            (
                "api from nobody: no rule, not an empty (allow-all) one",
                json!({"apiFrom": []}),
                vec![("ws", Value::Null), ("admin", json!([operator]))],
            ),
        ];
        for (case, settings, expected) in cases {
            let fleet = testing::fleet(json!({
                "image": "gw:1", "auth": {"anonymous": true}, "networkPolicy": settings,
            }));
            let policy = network_policy(&fleet, "wsfleet-system");
            let expected: Vec<(String, Value)> = expected
                .into_iter()
                .map(|(port, from)| (port.to_string(), from))
                .collect();
            assert_eq!(rules(&policy), expected, "{case}");
        }
    }

    #[test]
    fn policy_selects_the_fleets_pods_and_limits_ingress_only() {
        let fleet = testing::minimal();
        let policy = network_policy(&fleet, "ops");
        assert_eq!(policy.metadata.name.as_deref(), Some("chat"));
        assert_eq!(policy.metadata.namespace.as_deref(), Some("prod"));
        assert!(policy.metadata.owner_references.is_some());
        let spec = policy.spec.expect("spec");
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        assert_eq!(spec.egress, None);
        let selected = spec
            .pod_selector
            .and_then(|s| s.match_labels)
            .expect("selector");
        assert_eq!(selected, selector_labels(&fleet));
    }
}
