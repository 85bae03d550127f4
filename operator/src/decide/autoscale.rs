//! How many nodes the fleet should have: `spec.replicas` when autoscaling is off (the `scale`
//! subresource lets an HPA or KEDA write it), otherwise sized from live connections — up at
//! once, down only once every recommendation of the stabilization window agrees.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{Recommendation, WebSocketFleetSpec};

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

/// The size decision and the recommendation history to keep in status.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizing {
    pub desired: i32,
    pub recommendations: Vec<Recommendation>,
}

/// Desired nodes. With autoscaling on, `connections` is the fleet total when every live node
/// reported it; when it is unknown the fleet holds its size (within bounds) rather than act on
/// missing data. `current` is the previous desired size (the live count for a new fleet).
pub fn size(
    spec: &WebSocketFleetSpec,
    current: i32,
    connections: Option<i64>,
    history: &[Recommendation],
    now: Timestamp,
) -> Sizing {
    let a = &spec.autoscaling;
    if !a.enabled {
        return Sizing {
            desired: spec.replicas.max(0),
            recommendations: Vec::new(),
        };
    }
    let bounds = |n: i32| n.clamp(a.min_replicas, a.max_replicas.max(a.min_replicas));
    let window = SignedDuration::from_secs(i64::from(a.scale_down_stabilization_seconds.max(0)));
    let Some(total) = connections else {
        return Sizing {
            desired: bounds(current),
            recommendations: prune(history.to_vec(), now, window),
        };
    };
    let raw = nodes_for(total, target_per_node(spec), a.min_replicas, a.max_replicas);
    let mut recent = history.to_vec();
    recent.push(Recommendation {
        replicas: raw,
        time: Time(now),
    });
    let recent = prune(recent, now, window);
    // Down only to the highest size recommended within the window: one quiet minute does not
    // shrink a fleet that was busy a moment ago.
    let stable = recent.iter().map(|r| r.replicas).max().unwrap_or(raw);
    let desired = if raw >= current {
        raw
    } else {
        current.min(stable)
    };
    Sizing {
        desired: bounds(desired),
        recommendations: recent,
    }
}

/// Keeps the recommendations that can still matter: within the window, the latest per size,
/// and none that a larger, more recent one outlasts (the maximum over the window never needs
/// it). The list stays as short as the sizes recommended recently.
fn prune(
    mut history: Vec<Recommendation>,
    now: Timestamp,
    window: SignedDuration,
) -> Vec<Recommendation> {
    let oldest = now.checked_sub(window).unwrap_or(Timestamp::MIN);
    history.retain(|r| r.time.0 >= oldest && r.time.0 <= now);
    // Newest first; keep an entry only if it is larger than every newer one kept.
    history.sort_by(|a, b| b.time.0.cmp(&a.time.0).then(b.replicas.cmp(&a.replicas)));
    let mut kept: Vec<Recommendation> = Vec::new();
    for r in history {
        if kept.iter().all(|k| r.replicas > k.replicas) {
            kept.push(r);
        }
    }
    kept
}

/// The fleet is at its ceiling: autoscaling is at `maxReplicas` and the nodes hold at least
/// 90% of their caps, so more load will be refused.
pub fn at_capacity(spec: &WebSocketFleetSpec, desired: i32, nodes: i32, connections: i64) -> bool {
    let a = &spec.autoscaling;
    let capacity = i64::from(nodes.max(0)) * i64::from(spec.connections.max_per_node);
    a.enabled && desired >= a.max_replicas && capacity > 0 && connections * 10 >= capacity * 9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(autoscaling: serde_json::Value) -> WebSocketFleetSpec {
        serde_json::from_value(serde_json::json!({
            "image": "gw", "replicas": 3, "autoscaling": autoscaling, "auth": {"anonymous": true},
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
            let got = size(&spec, current, connections, &[], Timestamp::UNIX_EPOCH);
            assert_eq!(got.desired, want, "{name}");
        }
    }

    fn at(secs: i64, replicas: i32) -> Recommendation {
        Recommendation {
            replicas,
            time: Time(Timestamp::from_second(secs).expect("time")),
        }
    }

    #[test]
    fn stabilization_table() {
        // Target 100 per node, window 60 s, 1..=10 nodes, step 4.
        let spec = {
            let mut s = json_on(1, 10, Some(100));
            s.autoscaling.scale_down_stabilization_seconds = 60;
            s
        };
        // (name, previous desired, connections, history, now, want desired, want history)
        type Row = (
            &'static str,
            i32,
            Option<i64>,
            Vec<Recommendation>,
            i64,
            i32,
            Vec<(i64, i32)>,
        );
        let cases: Vec<Row> = vec![
            (
                "up at once",
                2,
                Some(550),
                vec![at(90, 2)],
                100,
                6,
                vec![(100, 6)],
            ),
            (
                "down waits while a higher one is in the window",
                6,
                Some(150),
                vec![at(60, 6)],
                100,
                6,
                vec![(100, 2), (60, 6)],
            ),
            (
                "down once the window passed",
                6,
                Some(150),
                vec![at(30, 6), at(80, 2)],
                100,
                2,
                vec![(100, 2)],
            ),
            (
                "down to the highest recent",
                6,
                Some(150),
                vec![at(10, 6), at(70, 4)],
                100,
                4,
                vec![(100, 2), (70, 4)],
            ),
            (
                "unknown holds and keeps history",
                5,
                None,
                vec![at(70, 4)],
                100,
                5,
                vec![(70, 4)],
            ),
            (
                "unknown holds within bounds",
                50,
                None,
                vec![],
                100,
                10,
                vec![],
            ),
            (
                "a dip and a rise do not flap",
                6,
                Some(590),
                vec![at(95, 2), at(90, 6)],
                100,
                6,
                vec![(100, 6)],
            ),
        ];
        for (name, current, connections, history, now, want, want_history) in cases {
            let now = Timestamp::from_second(now).expect("time");
            let got = size(&spec, current, connections, &history, now);
            assert_eq!(got.desired, want, "{name}");
            let history: Vec<(i64, i32)> = got
                .recommendations
                .iter()
                .map(|r| (r.time.0.as_second(), r.replicas))
                .collect();
            assert_eq!(history, want_history, "{name}: history");
        }
    }

    #[test]
    fn at_capacity_table() {
        let on = json_on(1, 3, Some(500)); // cap 1000 per node
        let cases = [
            ("at max and 90% full", on.clone(), 3, 3, 2700, true),
            ("at max, room left", on.clone(), 3, 3, 2699, false),
            ("below max", on.clone(), 2, 2, 2000, false),
            ("off never", spec(serde_json::json!({})), 3, 3, 3000, false),
            ("no nodes", on.clone(), 3, 0, 0, false),
        ];
        for (name, spec, desired, nodes, connections, want) in cases {
            assert_eq!(
                at_capacity(&spec, desired, nodes, connections),
                want,
                "{name}"
            );
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
