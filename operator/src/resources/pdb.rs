//! The PodDisruptionBudget: Kubernetes' own evictions (node drains, cluster upgrades) may take
//! at most `drain.maxUnavailable` gateway nodes at once; each evicted node then drains itself on
//! SIGTERM.
//!
//! The budget is written as an absolute `minAvailable` (the fleet's desired size less its
//! `maxUnavailable`), recomputed on every reconcile. A `maxUnavailable` budget would make the
//! disruption controller read the fleet's size from the `scale` subresource, which reports
//! `.spec.replicas`; with autoscaling on, that is not the live size (it stays at its default
//! of 1 while the autoscaler runs 20 nodes), and the budget would let a machine drain evict
//! nearly every node at once.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{client_service_name, owned_meta, selector_labels};
use crate::crd::WebSocketFleet;
use crate::validate::unavailable_budget;

/// The fleet's PodDisruptionBudget when it should have `desired` nodes.
pub fn pod_disruption_budget(fleet: &WebSocketFleet, desired: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned_meta(fleet, client_service_name(fleet)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available(fleet, desired))),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(fleet)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// `desired` less the nodes that may be unavailable at once (the same budget the operator's own
/// drains use), so a one-node fleet's machine can still be drained.
fn min_available(fleet: &WebSocketFleet, desired: i32) -> i32 {
    (desired - unavailable_budget(&fleet.spec.drain, desired)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;
    use serde_json::json;

    #[test]
    fn budget_is_desired_size_less_max_unavailable() {
        // (maxUnavailable, desired nodes, minAvailable)
        let cases = [
            (json!(1), 6, 5),
            (json!(2), 6, 4),
            (json!(1), 1, 0),
            (json!(1), 0, 0),
            (json!(0), 4, 3),
            (json!(10), 4, 0),
            (json!("25%"), 8, 6),
            (json!("25%"), 6, 4),
            (json!("100%"), 5, 0),
        ];
        for (max_unavailable, desired, expected) in cases {
            let fleet = testing::fleet(json!({
                "image": "gw:1", "auth": {"anonymous": true},
                "drain": {"maxUnavailable": max_unavailable}
            }));
            let spec = pod_disruption_budget(&fleet, desired).spec.expect("spec");
            assert_eq!(
                spec.min_available,
                Some(IntOrString::Int(expected)),
                "maxUnavailable {max_unavailable} of {desired}"
            );
            assert_eq!(spec.max_unavailable, None);
            let labels = spec.selector.and_then(|s| s.match_labels).expect("labels");
            assert_eq!(labels["wsfleet.io/fleet"], "chat");
        }
    }

    #[test]
    fn an_autoscaled_fleet_is_budgeted_by_its_live_size_not_spec_replicas() {
        // spec.replicas keeps its default of 1; the autoscaler wants 10 nodes.
        let fleet = testing::fleet(json!({
            "image": "gw:1", "auth": {"anonymous": true},
            "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 20},
        }));
        assert_eq!(fleet.spec.replicas, 1);
        let spec = pod_disruption_budget(&fleet, 10).spec.expect("spec");
        assert_eq!(spec.min_available, Some(IntOrString::Int(9)));
    }
}
