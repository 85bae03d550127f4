//! Drain-first removal: a node with clients leaves only by draining. This module owns the two
//! pure rules around a drain — how long a window to hand a node (the fleet-wide reconnect
//! budget) and what to do with a node already draining (wait, ask again, or delete it).

use jiff::{SignedDuration, Timestamp};

use crate::crd::DrainSettings;
use crate::decide::facts::{NodeView, ObservedPod};
use wsfleet_api::NodeState;

// The longest window and deadline a node accepts (`POST /drain` answers 400 beyond them).
use wsfleet_api::admin::{MAX_DRAIN_DEADLINE_SECONDS, MAX_DRAIN_WINDOW_SECONDS};

/// Reconnect window and deadline handed to one node, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainTiming {
    pub window_seconds: u64,
    pub deadline_seconds: u64,
}

/// The window is long enough for the nodes that stay to absorb the node's clients within their
/// handshake budget — `connections ÷ (handshakes/s × ready nodes left ÷ nodes draining now)` —
/// and never shorter than the configured window (nor longer than the gateway accepts). The
/// deadline keeps the configured slack between window and timeout.
pub fn timing(
    settings: &DrainSettings,
    handshakes_per_second: i32,
    connections: i64,
    ready_left: i32,
    draining_at_once: i32,
) -> DrainTiming {
    let positive = |n: i32| u64::from(n.max(0).unsigned_abs());
    let configured = positive(settings.reconnect_window_seconds).max(1);
    let spare =
        positive(handshakes_per_second) * positive(ready_left) / positive(draining_at_once).max(1);
    let needed = if spare > 0 {
        connections.max(0).unsigned_abs().div_ceil(spare)
    } else {
        configured
    };
    let window = configured.max(needed).min(MAX_DRAIN_WINDOW_SECONDS);
    let slack = positive(settings.timeout_seconds).saturating_sub(configured);
    DrainTiming {
        window_seconds: window,
        deadline_seconds: (window + slack).min(MAX_DRAIN_DEADLINE_SECONDS),
    }
}

/// What to do next with a node that is draining (not yet terminating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Keep waiting for its clients to move.
    Wait,
    /// It holds no clients any more (or says it is drained): delete the pod.
    DeleteDrained,
    /// Its drain deadline passed: delete the pod; the gateway would exit by now anyway.
    DeleteAtDeadline,
    /// The operator asked for a drain but the node serves with clients (the request was
    /// lost): ask again.
    AskAgain,
}

/// The rule for a draining node at `now`.
pub fn next(pod: &ObservedPod, now: Timestamp) -> Next {
    let deadline = deadline_of(pod);
    match &pod.node {
        NodeView::Reported(report) => match report.state {
            NodeState::Drained => Next::DeleteDrained,
            NodeState::Draining if report.connections == 0 => Next::DeleteDrained,
            // A gateway exits once drained and the kubelet restarts the container: an empty
            // serving node the operator drained is done, not to be drained again.
            NodeState::Serving if report.connections == 0 => Next::DeleteDrained,
            _ if deadline.is_some_and(|d| now >= d) => Next::DeleteAtDeadline,
            NodeState::Draining => Next::Wait,
            NodeState::Serving => Next::AskAgain,
        },
        // A node that cannot be asked is only let go once its deadline has passed.
        NodeView::Unreachable(_) | NodeView::NotAsked => match deadline {
            Some(d) if now >= d => Next::DeleteAtDeadline,
            _ => Next::Wait,
        },
    }
}

/// The earlier of the deadline the operator recorded and the one the node reports.
fn deadline_of(pod: &ObservedPod) -> Option<Timestamp> {
    let recorded = pod.drain_requested.and_then(|d| d.deadline);
    let reported = match &pod.node {
        NodeView::Reported(report) => report
            .drain
            .as_ref()
            .and_then(|d| i64::try_from(d.deadline_unix_ms).ok())
            .and_then(|ms| Timestamp::from_millisecond(ms).ok()),
        _ => None,
    };
    match (recorded, reported) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `now + seconds`, saturating far in the future rather than failing.
pub fn deadline_after(now: Timestamp, seconds: u64) -> Timestamp {
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    now.checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::facts::{DrainRequested, PodPhase};
    use wsfleet_api::{DrainProgress, StatusReport};

    fn settings(window: i32, timeout: i32) -> DrainSettings {
        DrainSettings {
            reconnect_window_seconds: window,
            timeout_seconds: timeout,
            ..DrainSettings::default()
        }
    }

    #[test]
    fn window_table() {
        // (name, window, timeout, handshakes/s, connections, ready left, draining, want)
        let cases = [
            (
                "small node gets the configured window",
                60,
                120,
                2000,
                1000,
                3,
                1,
                (60, 120),
            ),
            (
                "large node needs longer",
                60,
                120,
                1000,
                300_000,
                2,
                1,
                (150, 210),
            ),
            ("rounds up", 10, 10, 100, 1001, 1, 1, (11, 11)),
            (
                "concurrent drains share the budget",
                10,
                30,
                100,
                3000,
                3,
                3,
                (30, 50),
            ),
            (
                "no node left: configured window",
                60,
                120,
                2000,
                1_000_000,
                0,
                1,
                (60, 120),
            ),
            ("empty node", 5, 5, 1, 0, 1, 1, (5, 5)),
            (
                "capped at what the gateway accepts",
                60,
                120,
                1,
                10_000_000,
                1,
                1,
                (3600, 3660),
            ),
        ];
        for (name, window, timeout, hps, conns, left, at_once, want) in cases {
            let got = timing(&settings(window, timeout), hps, conns, left, at_once);
            assert_eq!((got.window_seconds, got.deadline_seconds), want, "{name}");
        }
    }

    fn draining(node: NodeView, deadline_ms: Option<i64>) -> ObservedPod {
        ObservedPod {
            name: "a".into(),
            revision: Some("r1".into()),
            phase: PodPhase::Running,
            ready: false,
            terminating: false,
            connections: None,
            config_map: None,
            problem: None,
            created: None,
            admin: None,
            node,
            drain_requested: Some(DrainRequested {
                deadline: deadline_ms.and_then(|ms| Timestamp::from_millisecond(ms).ok()),
            }),
        }
    }

    fn report(state: NodeState, connections: i64, deadline_ms: Option<i64>) -> NodeView {
        let connections = connections.unsigned_abs();
        let mut report = StatusReport::new("a", state, connections);
        report.drain = deadline_ms.map(|ms| DrainProgress {
            reason: "scale-down".into(),
            window_seconds: 10,
            deadline_unix_ms: ms.unsigned_abs(),
            remaining: connections,
        });
        NodeView::Reported(Box::new(report))
    }

    #[test]
    fn next_table() {
        let now = Timestamp::from_millisecond(10_000).expect("time");
        let cases = [
            (
                "still moving clients",
                draining(report(NodeState::Draining, 5, Some(20_000)), Some(20_000)),
                Next::Wait,
            ),
            (
                "empty is done",
                draining(report(NodeState::Draining, 0, Some(20_000)), Some(20_000)),
                Next::DeleteDrained,
            ),
            (
                "drained is done",
                draining(report(NodeState::Drained, 3, None), Some(20_000)),
                Next::DeleteDrained,
            ),
            (
                "recorded deadline passed",
                draining(report(NodeState::Draining, 5, None), Some(9_000)),
                Next::DeleteAtDeadline,
            ),
            (
                "reported deadline passed",
                draining(report(NodeState::Draining, 5, Some(10_000)), Some(60_000)),
                Next::DeleteAtDeadline,
            ),
            (
                "lost request is repeated",
                draining(report(NodeState::Serving, 5, None), Some(20_000)),
                Next::AskAgain,
            ),
            (
                "unreachable waits",
                draining(NodeView::Unreachable("timeout".into()), Some(20_000)),
                Next::Wait,
            ),
            (
                "unreachable past its deadline goes",
                draining(NodeView::Unreachable("timeout".into()), Some(10_000)),
                Next::DeleteAtDeadline,
            ),
            (
                "unreachable without a deadline waits",
                draining(NodeView::Unreachable("timeout".into()), None),
                Next::Wait,
            ),
        ];
        for (name, pod, want) in cases {
            assert_eq!(next(&pod, now), want, "{name}");
        }
    }
}
