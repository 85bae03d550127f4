//! The fleet's PodMonitor (`monitoring.coreos.com/v1`, the Prometheus Operator's kind): scrape
//! `/metrics` on the `admin` port of every gateway node. Built as a `DynamicObject`, since the
//! kind is not in `k8s-openapi` and its CRD may not be installed at all.

use kube::api::{ApiResource, DynamicObject, TypeMeta};
use kube::core::GroupVersionKind;
use serde_json::json;

use super::{FLEET_LABEL, client_service_name, owned_meta, selector_labels};
use crate::crd::WebSocketFleet;

/// API group and version of the PodMonitor kind.
pub const POD_MONITOR_GROUP_VERSION: &str = "monitoring.coreos.com/v1";

/// The PodMonitor kind, for `Api<DynamicObject>`.
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"),
        "podmonitors",
    )
}

/// The PodMonitor of `fleet`. Its labels are the fleet's `podMonitor.labels` (what a
/// Prometheus' `podMonitorSelector` picks) under the operator's own, which win.
pub fn pod_monitor(fleet: &WebSocketFleet) -> DynamicObject {
    let settings = &fleet.spec.monitoring.pod_monitor;
    let resource = pod_monitor_resource();
    let mut metadata = owned_meta(fleet, client_service_name(fleet));
    let mut labels = settings.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    DynamicObject {
        types: Some(TypeMeta {
            api_version: resource.api_version,
            kind: resource.kind,
        }),
        metadata,
        data: json!({
            "spec": {
                "selector": {"matchLabels": selector_labels(fleet)},
                "podMetricsEndpoints": [{
                    "port": "admin",
                    "path": "/metrics",
                    "interval": settings.interval,
                }],
                // Series carry the fleet's name (as `wsfleet_io_fleet`) beside pod and namespace.
                "podTargetLabels": [FLEET_LABEL],
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;

    #[test]
    fn pod_monitor_scrapes_the_admin_port_of_the_fleets_pods() {
        // (case, spec.monitoring.podMonitor, interval, label `release`)
        let cases = [
            ("defaults", json!({"enabled": true}), "30s", None),
            (
                "interval and selector label",
                json!({"enabled": true, "interval": "15s", "labels": {"release": "kube-prometheus"}}),
                "15s",
                Some("kube-prometheus"),
            ),
        ];
        for (case, settings, interval, release) in cases {
            let fleet = testing::fleet(json!({
                "image": "gw:1", "auth": {"anonymous": true},
                "monitoring": {"podMonitor": settings},
            }));
            let monitor = pod_monitor(&fleet);
            let types = monitor.types.clone().expect("types");
            assert_eq!(
                (types.api_version.as_str(), types.kind.as_str()),
                (POD_MONITOR_GROUP_VERSION, "PodMonitor"),
                "{case}"
            );
            assert_eq!(monitor.metadata.name.as_deref(), Some("chat"), "{case}");
            assert_eq!(
                monitor.metadata.namespace.as_deref(),
                Some("prod"),
                "{case}"
            );
            let owner = &monitor.metadata.owner_references.clone().expect("owner")[0];
            assert_eq!(owner.controller, Some(true), "{case}");
            let labels = monitor.metadata.labels.clone().expect("labels");
            assert_eq!(labels.get("release").map(String::as_str), release, "{case}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "wsfleet-operator");
            let spec = &monitor.data["spec"];
            assert_eq!(
                spec["selector"]["matchLabels"],
                json!(selector_labels(&fleet)),
                "{case}"
            );
            assert_eq!(
                spec["podMetricsEndpoints"],
                json!([{"port": "admin", "path": "/metrics", "interval": interval}]),
                "{case}"
            );
        }
    }

    #[test]
    fn user_labels_never_displace_the_operators() {
        let fleet = testing::fleet(json!({
            "image": "gw:1", "auth": {"anonymous": true},
            "monitoring": {"podMonitor": {"enabled": true,
                                          "labels": {"wsfleet.io/fleet": "other"}}},
        }));
        let labels = pod_monitor(&fleet).metadata.labels.expect("labels");
        assert_eq!(labels["wsfleet.io/fleet"], "chat");
    }
}
