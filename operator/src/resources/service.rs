//! The client Service (load-balanced WebSocket entry point) and the headless Service that gives
//! every node a stable DNS name (`<pod>.<fleet>-nodes.<namespace>.svc`) for the admin API.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    ADMIN_PORT, WS_PORT, client_service_name, headless_service_name, owned_meta, selector_labels,
};
use crate::crd::WebSocketFleet;

/// The Service clients connect to. Draining and not-ready nodes leave its endpoints because
/// the gateway's `/readyz` fails while draining.
pub fn client_service(fleet: &WebSocketFleet) -> Service {
    Service {
        metadata: owned_meta(fleet, client_service_name(fleet)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(fleet)),
            ports: Some(vec![port("ws", WS_PORT)]),
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
