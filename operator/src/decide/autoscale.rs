//! How many nodes the fleet should have: `spec.replicas` when autoscaling is off (the `scale`
//! subresource lets an HPA or KEDA write it), otherwise sized from live connections.

use crate::crd::WebSocketFleetSpec;

/// The connection target per node in force: explicit, or 80% of the per-node cap so a fleet
/// at target still has room to absorb a drained node's clients.
pub fn target_per_node(spec: &WebSocketFleetSpec) -> i64 {
    spec.autoscaling
        .target_connections_per_node
        .map(i64::from)
        .unwrap_or_else(|| i64::from(spec.connections.max_per_node) * 4 / 5)
        .max(1)
}

/// Nodes needed for `connections` at `target` each, within `[min, max]`.
pub fn nodes_for(connections: i64, target: i64, min: i32, max: i32) -> i32 {
    let target = target.max(1);
    let needed = (connections.max(0) + target - 1) / target;
    let needed = i32::try_from(needed).unwrap_or(i32::MAX);
    needed.clamp(min, max.max(min))
}

/// Desired nodes. With autoscaling on, `connections` is the fleet total when every serving node
/// reported it; when it is unknown the fleet holds its current size (within bounds) rather than
/// act on missing data.
pub fn desired(spec: &WebSocketFleetSpec, current: i32, connections: Option<i64>) -> i32 {
    let a = &spec.autoscaling;
    if !a.enabled {
        return spec.replicas.max(0);
    }
    match connections {
        Some(total) => nodes_for(total, target_per_node(spec), a.min_replicas, a.max_replicas),
        None => current.clamp(a.min_replicas, a.max_replicas.max(a.min_replicas)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(autoscaling: serde_json::Value) -> WebSocketFleetSpec {
        serde_json::from_value(serde_json::json!({
            "image": "gw", "replicas": 3, "autoscaling": autoscaling,
            "connections": {"maxPerNode": 1000}
        }))
        .expect("spec")
    }

    #[test]
    fn table() {
        let on = json_on(2, 10, Some(500));
        let cases = [
            (
                "off uses replicas",
                spec(serde_json::json!({})),
                7,
                Some(99_999),
                3,
            ),
            ("exact multiple", on.clone(), 2, Some(1500), 3),
            ("rounds up", on.clone(), 2, Some(1501), 4),
            ("min bound", on.clone(), 5, Some(0), 2),
            ("max bound", on.clone(), 5, Some(1_000_000), 10),
            ("unknown holds size", on.clone(), 5, None, 5),
            ("unknown within bounds", on.clone(), 50, None, 10),
            (
                "default target is 80% of cap",
                json_on(1, 10, None),
                1,
                Some(1601),
                3,
            ),
        ];
        for (name, spec, current, connections, want) in cases {
            assert_eq!(desired(&spec, current, connections), want, "{name}");
        }
    }

    fn json_on(min: i32, max: i32, target: Option<i32>) -> WebSocketFleetSpec {
        let mut autoscaling =
            serde_json::json!({"enabled": true, "minReplicas": min, "maxReplicas": max});
        if let Some(t) = target {
            autoscaling["targetConnectionsPerNode"] = t.into();
        }
        spec(autoscaling)
    }
}
