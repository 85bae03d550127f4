//! The client Service (load-balanced WebSocket entry point, shaped by `spec.service`) and the
//! headless Service that gives every node a stable DNS name
//! (`<pod>.<fleet>-nodes.<namespace>.svc`) for the admin API.
//!
//! Neither is part of the pod template: changing `spec.service` re-applies the Service in place
//! and leaves the nodes and their clients alone.

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    ADMIN_PORT, WS_PORT, client_service_name, headless_service_name, owned_meta, selector_labels,
};
use crate::crd::{ServiceType, SessionAffinity, TrafficPolicy, WebSocketFleet};

/// The Service clients connect to. Draining and not-ready nodes leave its endpoints because
/// the gateway's `/readyz` fails while draining.
pub fn client_service(fleet: &WebSocketFleet) -> Service {
    let settings = &fleet.spec.service;
    let mut metadata = owned_meta(fleet, client_service_name(fleet));
    // The operator's labels win: the controller's watch and the fleet's selectors rely on them.
    let mut labels = settings.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    metadata.annotations = (!settings.annotations.is_empty()).then(|| settings.annotations.clone());
    let type_ = match settings.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let affinity = match settings.session_affinity {
        SessionAffinity::None => "None",
        SessionAffinity::ClientIP => "ClientIP",
    };
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector_labels(fleet)),
            ports: Some(vec![port("ws", WS_PORT)]),
            external_traffic_policy: settings.external_traffic_policy.map(|p| {
                match p {
                    TrafficPolicy::Cluster => "Cluster",
                    TrafficPolicy::Local => "Local",
                }
                .into()
            }),
            load_balancer_source_ranges: settings.load_balancer_source_ranges.clone(),
            load_balancer_class: settings.load_balancer_class.clone(),
            session_affinity: Some(affinity.into()),
            session_affinity_config: settings.session_affinity_timeout_seconds.map(|seconds| {
                SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(seconds),
                    }),
                }
            }),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The headless Service for per-node addressing; it lists nodes before they are Ready so the
/// operator can reach a starting or draining node's admin port.
pub fn headless_service(fleet: &WebSocketFleet) -> Service {
    Service {
        metadata: owned_meta(fleet, headless_service_name(fleet)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(fleet)),
            ports: Some(vec![port("ws", WS_PORT), port("admin", ADMIN_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;
    use serde_json::json;

    #[test]
    fn client_service_follows_spec_service() {
        struct Case {
            name: &'static str,
            service: serde_json::Value,
            type_: &'static str,
            traffic: Option<&'static str>,
            ranges: Option<Vec<&'static str>>,
            class: Option<&'static str>,
            affinity: &'static str,
            affinity_timeout: Option<i32>,
        }
        let cases = [
            Case {
                name: "defaults",
                service: json!({}),
                type_: "ClusterIP",
                traffic: None,
                ranges: None,
                class: None,
                affinity: "None",
                affinity_timeout: None,
            },
            Case {
                name: "node port, local traffic",
                service: json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
                type_: "NodePort",
                traffic: Some("Local"),
                ranges: None,
                class: None,
                affinity: "None",
                affinity_timeout: None,
            },
            Case {
                name: "load balancer with everything",
                service: json!({
                    "type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                    "loadBalancerSourceRanges": ["203.0.113.0/24", "2001:db8::/32"],
                    "loadBalancerClass": "service.k8s.aws/nlb",
                    "sessionAffinity": "ClientIP", "sessionAffinityTimeoutSeconds": 600,
                }),
                type_: "LoadBalancer",
                traffic: Some("Cluster"),
                ranges: Some(vec!["203.0.113.0/24", "2001:db8::/32"]),
                class: Some("service.k8s.aws/nlb"),
                affinity: "ClientIP",
                affinity_timeout: Some(600),
            },
            Case {
                name: "client affinity with Kubernetes' timeout",
                service: json!({"sessionAffinity": "ClientIP"}),
                type_: "ClusterIP",
                traffic: None,
                ranges: None,
                class: None,
                affinity: "ClientIP",
                affinity_timeout: None,
            },
        ];
        for case in cases {
            let fleet = testing::fleet(json!({
                "image": "gw:1", "auth": {"anonymous": true}, "service": case.service,
            }));
            let spec = client_service(&fleet).spec.expect("spec");
            let name = case.name;
            assert_eq!(spec.type_.as_deref(), Some(case.type_), "{name}");
            assert_eq!(
                spec.external_traffic_policy.as_deref(),
                case.traffic,
                "{name}"
            );
            assert_eq!(
                spec.load_balancer_source_ranges,
                case.ranges
                    .map(|r| r.into_iter().map(String::from).collect::<Vec<_>>()),
                "{name}"
            );
            assert_eq!(spec.load_balancer_class.as_deref(), case.class, "{name}");
            assert_eq!(
                spec.session_affinity.as_deref(),
                Some(case.affinity),
                "{name}"
            );
            assert_eq!(
                spec.session_affinity_config
                    .and_then(|c| c.client_ip)
                    .and_then(|c| c.timeout_seconds),
                case.affinity_timeout,
                "{name}"
            );
            // Whatever the shape, the Service serves the same pods on the same port.
            assert_eq!(spec.selector.expect("selector")["wsfleet.io/fleet"], "chat");
            assert_eq!(spec.ports.expect("ports")[0].name.as_deref(), Some("ws"));
        }
    }

    #[test]
    fn user_labels_and_annotations_never_displace_the_operators() {
        let fleet = testing::fleet(json!({
            "image": "gw:1", "auth": {"anonymous": true},
            "service": {
                "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
                "labels": {"team": "realtime", "app.kubernetes.io/managed-by": "someone",
                           "wsfleet.io/fleet": "other"},
            },
        }));
        let meta = client_service(&fleet).metadata;
        let labels = meta.labels.expect("labels");
        assert_eq!(labels["team"], "realtime");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "wsfleet-operator");
        assert_eq!(labels["wsfleet.io/fleet"], "chat");
        assert_eq!(
            meta.annotations.expect("annotations")["service.beta.kubernetes.io/aws-load-balancer-type"],
            "nlb"
        );
        assert_eq!(
            client_service(&testing::minimal()).metadata.annotations,
            None
        );
    }

    #[test]
    fn service_settings_do_not_change_the_pod_revision() {
        use crate::resources::pod::template;
        use crate::resources::sysctl::KubeVersion;
        let server = KubeVersion {
            major: 1,
            minor: 32,
        };
        let plain = testing::minimal();
        let exposed = testing::fleet(json!({
            "image": "gw:1", "auth": {"anonymous": true},
            "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                        "loadBalancerSourceRanges": ["10.0.0.0/8"], "annotations": {"a": "b"}},
        }));
        assert_eq!(
            template(&plain, server).revision,
            template(&exposed, server).revision
        );
        assert_ne!(client_service(&plain), client_service(&exposed));
    }

    #[test]
    fn client_service_exposes_only_the_websocket_port() {
        let svc = client_service(&testing::minimal());
        assert_eq!(svc.metadata.name.as_deref(), Some("chat"));
        let spec = svc.spec.expect("spec");
        let ports = spec.ports.expect("ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, 8080);
        assert_eq!(ports[0].target_port, Some(IntOrString::String("ws".into())));
        assert_eq!(spec.selector.expect("selector")["wsfleet.io/fleet"], "chat");
        assert_eq!(spec.cluster_ip, None);
    }

    #[test]
    fn headless_service_publishes_not_ready_nodes() {
        let svc = headless_service(&testing::minimal());
        assert_eq!(svc.metadata.name.as_deref(), Some("chat-nodes"));
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<i32> = spec.ports.expect("ports").iter().map(|p| p.port).collect();
        assert_eq!(ports, [8080, 9090]);
    }
}
