//! The PodDisruptionBudget: Kubernetes' own evictions (node drains, cluster upgrades) may take
//! at most `drain.maxUnavailable` gateway nodes at once; each evicted node then drains itself on
//! SIGTERM. An int-or-percent budget needs the pods' controller to expose `scale`, which the
//! `WebSocketFleet` CRD does.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{client_service_name, owned_meta, selector_labels};
use crate::crd::WebSocketFleet;

/// The fleet's PodDisruptionBudget.
pub fn pod_disruption_budget(fleet: &WebSocketFleet) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned_meta(fleet, client_service_name(fleet)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(fleet.spec.drain.max_unavailable.clone()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(fleet)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn budget_follows_drain_max_unavailable() {
        let fleet = testing::fleet(serde_json::json!({
            "image": "gw:1", "auth": {"anonymous": true}, "drain": {"maxUnavailable": "25%"}
        }));
        let spec = pod_disruption_budget(&fleet).spec.expect("spec");
        assert_eq!(
            spec.max_unavailable,
            Some(IntOrString::String("25%".into()))
        );
        assert_eq!(spec.min_available, None);
        let labels = spec.selector.and_then(|s| s.match_labels).expect("labels");
        assert_eq!(labels["wsfleet.io/fleet"], "chat");
    }
}
