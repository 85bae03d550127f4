//! Which gateway pods leave the fleet this round, and why.
//!
//! Choosing is separate from how a pod goes: the decision drains a chosen node that may hold
//! clients and deletes one that cannot (not running). A running node whose admin API does not
//! answer is never chosen: it cannot be drained and may hold clients.

use crate::decide::facts::ObservedPod;

/// Why a pod leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// Its process is gone (pod phase Failed/Succeeded); a replacement is created.
    Exited,
    /// The fleet is larger than desired.
    Surplus,
    /// It runs an old revision and a Ready new-revision node can take its place.
    Replaced,
    /// It finished draining (no clients left).
    Drained,
    /// Its drain deadline passed.
    DrainDeadline,
}

/// A pod to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub pod: String,
    pub reason: RemovalReason,
}

/// The numbers that bound one round of removals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nodes the fleet should have.
    pub desired: i32,
    /// Extra nodes allowed while old-revision nodes remain.
    pub surge: i32,
    /// More nodes that may start draining now (maxUnavailable minus those already draining).
    pub slots: i32,
    /// Old-revision nodes may be replaced (false while a stalled rollout is stopped).
    pub replace: bool,
}

/// Surplus and replaced pods among `live` (not terminating, not exited), in the order they
/// should go: unreachable first (kept, see below), old revision, then not Ready, then fewest
/// connections, then name. A Ready
/// node is only taken while the Ready nodes left still cover the fleet.
pub fn choose(live: &[&ObservedPod], revision: &str, limits: Limits) -> Vec<Removal> {
    let is_old = |p: &ObservedPod| p.revision.as_deref() != Some(revision);
    let has_old = live.iter().any(|p| is_old(p));
    let live_count = i32::try_from(live.len()).unwrap_or(i32::MAX);
    let allowed = limits.desired + if has_old { limits.surge.max(0) } else { 0 };
    let mut surplus = (live_count - allowed).max(0);
    // With surge, old nodes wait until new Ready nodes cover the fleet; without it, they are
    // replaced in place, up to the drain slots below the desired size.
    let floor = if limits.surge > 0 {
        limits.desired
    } else {
        limits.desired - limits.slots
    };
    let mut ready_left = i32::try_from(live.iter().filter(|p| p.ready).count()).unwrap_or(0);

    let mut order: Vec<&ObservedPod> = live.to_vec();
    order.sort_by_key(|p| {
        (
            !p.unreachable(),
            !is_old(p),
            p.ready,
            p.connections.unwrap_or(i64::MAX),
            p.name.clone(),
        )
    });

    let mut removals = Vec::new();
    for pod in order {
        if i32::try_from(removals.len()).unwrap_or(i32::MAX) >= limits.slots {
            break;
        }
        // An unreachable node is the first victim but cannot be drained: it holds its place
        // (and the surplus it would fill) rather than a healthy node being drained instead.
        if pod.unreachable() {
            surplus = (surplus - 1).max(0);
            continue;
        }
        // A surplus node may go whatever is left (the fleet is shrinking); an old one only
        // while the Ready nodes left still reach the floor (one that is not Ready serves nobody).
        let reason = if surplus > 0 {
            surplus -= 1;
            RemovalReason::Surplus
        } else if limits.replace && is_old(pod) && (!pod.ready || ready_left > floor) {
            RemovalReason::Replaced
        } else {
            continue;
        };
        if pod.ready {
            ready_left -= 1;
        }
        removals.push(Removal {
            pod: pod.name.clone(),
            reason,
        });
    }
    removals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::facts::{NodeView, PodPhase};
    use wsfleet_api::{NodeState, StatusReport};

    fn pod(name: &str, revision: &str, ready: bool, connections: Option<i64>) -> ObservedPod {
        let mut report = StatusReport::new(
            name,
            NodeState::Serving,
            connections.unwrap_or(0).unsigned_abs(),
        );
        report.ready = ready;
        let node = NodeView::Reported(Box::new(report));
        ObservedPod {
            name: name.into(),
            revision: Some(revision.into()),
            phase: PodPhase::Running,
            ready,
            terminating: false,
            connections,
            config_map: None,
            problem: None,
            created: None,
            admin: None,
            node,
            drain_requested: None,
        }
    }

    fn unreachable(mut pod: ObservedPod) -> ObservedPod {
        pod.node = NodeView::Unreachable("timed out".into());
        pod
    }

    fn pending(mut pod: ObservedPod) -> ObservedPod {
        pod.phase = PodPhase::Pending;
        pod.node = NodeView::NotAsked;
        pod
    }

    fn names(removals: &[Removal]) -> Vec<(&str, RemovalReason)> {
        removals
            .iter()
            .map(|r| (r.pod.as_str(), r.reason))
            .collect()
    }

    fn limits(desired: i32, surge: i32, slots: i32) -> Limits {
        Limits {
            desired,
            surge,
            slots,
            replace: true,
        }
    }

    #[test]
    fn table() {
        use RemovalReason::*;
        type Row = (
            &'static str,
            Vec<ObservedPod>,
            Limits,
            Vec<(&'static str, RemovalReason)>,
        );
        let cases: Vec<Row> = vec![
            (
                "steady fleet keeps everyone",
                vec![pod("a", "r2", true, None), pod("b", "r2", true, None)],
                limits(2, 1, 1),
                vec![],
            ),
            (
                "scale down takes the not-ready node first",
                vec![
                    pod("a", "r2", true, None),
                    pod("b", "r2", false, None),
                    pod("c", "r2", true, None),
                ],
                limits(2, 1, 1),
                vec![("b", Surplus)],
            ),
            (
                "scale down prefers the least connected",
                vec![
                    pod("a", "r2", true, Some(50)),
                    pod("b", "r2", true, Some(10)),
                    pod("c", "r2", true, Some(30)),
                ],
                limits(1, 1, 2),
                vec![("b", Surplus), ("c", Surplus)],
            ),
            (
                "scale down is bounded by the drain slots",
                vec![
                    pod("a", "r2", true, None),
                    pod("b", "r2", true, None),
                    pod("c", "r2", true, None),
                ],
                limits(0, 1, 1),
                vec![("a", Surplus)],
            ),
            (
                "no slots, no removal",
                vec![pod("a", "r2", true, None), pod("b", "r2", true, None)],
                limits(1, 1, 0),
                vec![],
            ),
            (
                "rollout waits while the surge node is not ready",
                vec![
                    pod("a", "r1", true, None),
                    pod("b", "r1", true, None),
                    pod("n", "r2", false, None),
                ],
                limits(2, 1, 1),
                vec![],
            ),
            (
                "rollout replaces one old node once the new one is ready",
                vec![
                    pod("a", "r1", true, None),
                    pod("b", "r1", true, None),
                    pod("n", "r2", true, None),
                ],
                limits(2, 1, 1),
                vec![("a", Replaced)],
            ),
            (
                "an old node that is not ready goes without waiting",
                vec![
                    pod("a", "r1", true, None),
                    pod("b", "r1", false, None),
                    pod("n", "r2", false, None),
                ],
                limits(2, 1, 1),
                vec![("b", Replaced)],
            ),
            (
                "without surge an old node makes room in place",
                vec![pod("a", "r1", true, None), pod("b", "r1", true, None)],
                limits(2, 0, 1),
                vec![("a", Replaced)],
            ),
            (
                "in place replacement is bounded by the drain slots",
                vec![
                    pod("a", "r1", true, None),
                    pod("b", "r1", true, None),
                    pod("c", "r1", true, None),
                ],
                limits(3, 0, 1),
                vec![("a", Replaced)],
            ),
            (
                "an unreachable node is never chosen, nor replaced by a healthy victim",
                vec![
                    unreachable(pod("a", "r2", true, None)),
                    pod("b", "r2", true, Some(90)),
                    pod("c", "r2", true, Some(80)),
                ],
                limits(2, 1, 1),
                vec![],
            ),
            (
                "past the unreachable node's share, the least connected goes",
                vec![
                    unreachable(pod("a", "r2", true, None)),
                    pod("b", "r2", true, Some(90)),
                    pod("c", "r2", true, Some(80)),
                ],
                limits(1, 1, 2),
                vec![("c", Surplus)],
            ),
            (
                "only unreachable surplus: nothing goes",
                vec![
                    unreachable(pod("a", "r2", true, None)),
                    pod("b", "r2", true, Some(90)),
                ],
                limits(1, 1, 1),
                vec![],
            ),
            (
                "a pending pod that cannot answer still goes",
                vec![
                    pending(pod("a", "r2", false, None)),
                    pod("b", "r2", true, Some(5)),
                ],
                limits(1, 1, 1),
                vec![("a", Surplus)],
            ),
            (
                "a stopped rollout replaces nothing",
                vec![
                    pod("a", "r1", true, None),
                    pod("b", "r1", true, None),
                    pod("n", "r2", true, None),
                ],
                Limits {
                    replace: false,
                    ..limits(2, 1, 1)
                },
                vec![],
            ),
            (
                "in place replacement waits for the previous one to be ready",
                vec![pod("a", "r1", true, None), pod("n", "r2", false, None)],
                limits(2, 0, 1),
                vec![],
            ),
        ];
        for (name, pods, limits, want) in cases {
            let live: Vec<&ObservedPod> = pods.iter().collect();
            assert_eq!(names(&choose(&live, "r2", limits)), want, "{name}");
        }
    }
}
