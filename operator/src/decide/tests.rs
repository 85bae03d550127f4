//! Table-driven tests of the decision function.

use super::names::testing::CountingNames;
use super::*;
use crate::conditions::AT_CAPACITY;
use crate::crd::NodePhase;
use crate::resources::testing;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::net::SocketAddr;
use wsfleet_api::NodeState;

const V1_32: KubeVersion = KubeVersion {
    major: 1,
    minor: 32,
};

fn fleet(extra: serde_json::Value) -> WebSocketFleet {
    let mut spec = serde_json::json!({
        "image": "gw:1",
        "auth": {"anonymous": true},
        "backplane": {"redis": {"url": "redis://r:6379"}}
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    testing::fleet(spec)
}

fn revision_of(fleet: &WebSocketFleet) -> String {
    template(fleet, V1_32).revision
}

/// A pod; a running one has answered `/status` (serving, no clients).
fn pod(name: &str, revision: &str, phase: PodPhase, ready: bool) -> ObservedPod {
    let running = phase == PodPhase::Running;
    ObservedPod {
        name: name.into(),
        revision: Some(revision.into()),
        phase,
        ready,
        terminating: false,
        connections: running.then_some(0),
        config_map: None,
        problem: None,
        created: Some(Timestamp::UNIX_EPOCH),
        admin: running.then(|| SocketAddr::from(([127, 0, 0, 1], 9090))),
        node: if running {
            report(name, NodeState::Serving, ready, 0)
        } else {
            NodeView::NotAsked
        },
        drain_requested: None,
    }
}

fn report(name: &str, state: NodeState, ready: bool, connections: i64) -> NodeView {
    let mut report = wsfleet_api::StatusReport::new(name, state, connections.unsigned_abs());
    report.ready = ready;
    report.max_connections = 1000;
    NodeView::Reported(Box::new(report))
}

/// A serving node holding `connections` clients.
fn holding(name: &str, revision: &str, connections: i64) -> ObservedPod {
    let mut p = serving(name, revision);
    p.connections = Some(connections);
    p.node = report(name, NodeState::Serving, true, connections);
    p
}

/// A node the operator asked to drain, with `connections` left and a deadline at `deadline_s`.
fn draining(name: &str, revision: &str, connections: i64, deadline_s: i64) -> ObservedPod {
    let mut p = holding(name, revision, connections);
    p.ready = false;
    p.node = report(name, NodeState::Draining, false, connections);
    p.drain_requested = Some(crate::decide::facts::DrainRequested {
        deadline: Timestamp::from_second(deadline_s).ok(),
    });
    p
}

fn serving(name: &str, revision: &str) -> ObservedPod {
    pod(name, revision, PodPhase::Running, true)
}

fn run(fleet: &WebSocketFleet, pods: &[ObservedPod]) -> Plan {
    decide(
        Observation {
            fleet,
            pods,
            config_maps: &[],
            server: V1_32,
            pod_monitor_api: false,
            now: Timestamp::UNIX_EPOCH,
        },
        &mut CountingNames::default(),
    )
}

fn condition(plan: &Plan, type_: &str) -> (String, String) {
    conditions::find(&plan.status.conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

fn removed(plan: &Plan) -> Vec<(&str, RemovalReason)> {
    plan.remove
        .iter()
        .map(|r| (r.pod.as_str(), r.reason))
        .collect()
}

fn drained(plan: &Plan) -> Vec<&str> {
    plan.drain.iter().map(|d| d.pod.as_str()).collect()
}

/// One row: a fleet, its pods (as a function of the current revision), and what must follow.
struct Case {
    name: &'static str,
    fleet: WebSocketFleet,
    pods: fn(&str) -> Vec<ObservedPod>,
    creates: usize,
    removes: Vec<(&'static str, RemovalReason)>,
    drains: Vec<&'static str>,
    ready: (&'static str, &'static str),
    progressing: (&'static str, &'static str),
    degraded: (&'static str, &'static str),
}

#[test]
fn table() {
    use RemovalReason::*;
    let cases = vec![
        Case {
            name: "new fleet creates every node",
            fleet: fleet(serde_json::json!({"replicas": 3})),
            pods: |_| vec![],
            creates: 3,
            removes: vec![],
            drains: vec![],
            ready: ("False", "NodesNotReady"),
            progressing: ("True", "Scaling"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            name: "steady fleet does nothing",
            fleet: fleet(serde_json::json!({"replicas": 2})),
            pods: |r| vec![serving("a", r), serving("b", r)],
            creates: 0,
            removes: vec![],
            drains: vec![],
            ready: ("True", "NodesReady"),
            progressing: ("False", "Complete"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            name: "an exited node is deleted and replaced",
            fleet: fleet(serde_json::json!({"replicas": 2})),
            pods: |r| vec![serving("a", r), pod("b", r, PodPhase::Failed, false)],
            creates: 1,
            removes: vec![("b", Exited)],
            drains: vec![],
            ready: ("False", "NodesNotReady"),
            progressing: ("True", "Scaling"),
            degraded: ("True", "NodesExited"),
        },
        Case {
            name: "a deleted (terminating) node is replaced",
            fleet: fleet(serde_json::json!({"replicas": 2})),
            pods: |r| {
                let mut gone = serving("b", r);
                gone.terminating = true;
                vec![serving("a", r), gone]
            },
            creates: 1,
            removes: vec![],
            drains: vec![],
            ready: ("False", "NodesNotReady"),
            progressing: ("True", "Scaling"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            name: "scale down removes a not-ready node first, one at a time",
            fleet: fleet(serde_json::json!({"replicas": 1})),
            pods: |r| {
                vec![
                    serving("a", r),
                    pod("b", r, PodPhase::Pending, false),
                    serving("c", r),
                ]
            },
            creates: 0,
            removes: vec![("b", Surplus)],
            drains: vec![],
            ready: ("True", "NodesReady"),
            progressing: ("True", "Scaling"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            name: "a changed template surges one new node",
            fleet: fleet(serde_json::json!({"replicas": 2})),
            pods: |_| vec![serving("a", "old"), serving("b", "old")],
            creates: 1,
            removes: vec![],
            drains: vec![],
            ready: ("True", "NodesReady"),
            progressing: ("True", "RollingOut"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            // ...and surges no further while the replaced one drains: a draining node is a pod
            // until it is deleted, so replicas + maxSurge are all in use.
            name: "rollout drains an old node once the new one is ready",
            fleet: fleet(serde_json::json!({"replicas": 2})),
            pods: |r| vec![serving("a", "old"), serving("b", "old"), serving("n", r)],
            creates: 0,
            removes: vec![],
            drains: vec!["a"],
            ready: ("True", "NodesReady"),
            progressing: ("True", "RollingOut"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            name: "rollout surges the next new node while a drain is under way only within maxSurge",
            fleet: fleet(serde_json::json!({"replicas": 3, "drain": {"maxSurge": 2}})),
            pods: |r| {
                vec![
                    draining("a", "old", 4, i64::MAX / 4),
                    serving("b", "old"),
                    serving("c", "old"),
                    serving("n", r),
                ]
            },
            creates: 1,
            removes: vec![],
            drains: vec![],
            ready: ("True", "NodesReady"),
            progressing: ("True", "RollingOut"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            name: "autoscaling grows by at most maxScaleUpStep",
            fleet: fleet(serde_json::json!({
                "autoscaling": {"enabled": true, "minReplicas": 6, "maxReplicas": 10, "maxScaleUpStep": 4}
            })),
            pods: |_| vec![],
            creates: 4,
            removes: vec![],
            drains: vec![],
            ready: ("False", "NodesNotReady"),
            progressing: ("True", "Scaling"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            name: "min above max is not acted on",
            fleet: fleet(serde_json::json!({
                "autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}
            })),
            pods: |_| vec![pod("x", "old", PodPhase::Failed, false)],
            creates: 0,
            removes: vec![],
            drains: vec![],
            ready: ("False", "InvalidSpec"),
            progressing: ("False", "InvalidSpec"),
            degraded: ("True", "InvalidSpec"),
        },
        Case {
            name: "two nodes without a backplane are not acted on",
            fleet: testing::fleet(serde_json::json!({
                "image": "gw:1", "replicas": 2, "auth": {"anonymous": true}
            })),
            pods: |_| vec![],
            creates: 0,
            removes: vec![],
            drains: vec![],
            ready: ("False", "InvalidSpec"),
            progressing: ("False", "InvalidSpec"),
            degraded: ("True", "InvalidSpec"),
        },
    ];
    for case in cases {
        let revision = revision_of(&case.fleet);
        let pods = (case.pods)(&revision);
        let plan = run(&case.fleet, &pods);
        let name = case.name;
        assert_eq!(
            plan.create.len(),
            case.creates,
            "{name}: creates {:?}",
            plan.create
        );
        assert_eq!(removed(&plan), case.removes, "{name}");
        assert_eq!(drained(&plan), case.drains, "{name}: drains");
        let pair = |(a, b): (&str, &str)| (a.to_string(), b.to_string());
        assert_eq!(condition(&plan, READY), pair(case.ready), "{name}: Ready");
        assert_eq!(
            condition(&plan, PROGRESSING),
            pair(case.progressing),
            "{name}: Progressing"
        );
        assert_eq!(
            condition(&plan, DEGRADED),
            pair(case.degraded),
            "{name}: Degraded"
        );
        for created in &plan.create {
            assert!(
                created.starts_with(&format!("chat-{revision}-")),
                "{name}: {created}"
            );
        }
    }
}

#[test]
fn invalid_spec_says_why_once_and_keeps_counts() {
    let fleet = fleet(serde_json::json!({"drain": {"maxUnavailable": "lots"}}));
    let pods = vec![serving("a", "old")];
    let plan = run(&fleet, &pods);
    assert!(plan.template.is_none());
    assert_eq!(plan.status.replicas, 1);
    let degraded = conditions::find(&plan.status.conditions, DEGRADED).expect("Degraded");
    assert!(
        degraded.message.contains("drain.maxUnavailable"),
        "{}",
        degraded.message
    );
    assert_eq!(plan.events.len(), 1);
    assert!(plan.events[0].warning);

    let mut again = fleet.clone();
    again.status = Some(plan.status.clone());
    assert!(run(&again, &pods).events.is_empty(), "reported only once");
}

#[test]
fn status_describes_nodes_selector_and_sysctls() {
    let fleet = fleet(serde_json::json!({"replicas": 2}));
    let r = revision_of(&fleet);
    let mut leaving = serving("c", &r);
    leaving.terminating = true;
    let pods = vec![
        serving("a", &r),
        pod("b", &r, PodPhase::Pending, false),
        leaving,
    ];
    let status = run(&fleet, &pods).status;
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.desired_replicas
        ),
        (2, 1, 2)
    );
    assert_eq!(
        status.selector,
        "app.kubernetes.io/name=wsfleet-gateway,wsfleet.io/fleet=chat,!wsfleet.io/draining"
    );
    assert_eq!(status.revision.as_deref(), Some(r.as_str()));
    let phases: Vec<(&str, NodePhase)> = status
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.phase))
        .collect();
    assert_eq!(
        phases,
        [
            ("a", NodePhase::Serving),
            ("b", NodePhase::Starting),
            ("c", NodePhase::Draining)
        ]
    );
    let sysctls = status.sysctls.expect("sysctl report");
    assert!(
        sysctls
            .applied
            .contains(&"net.ipv4.ip_local_port_range".to_string())
    );
    assert!(sysctls.skipped.iter().any(|s| s.name == "fs.file-max"));
    assert_eq!(status.last_scale_time, Some(Time(Timestamp::UNIX_EPOCH)));
}

#[test]
fn names_are_deterministic_and_do_not_clash() {
    let fleet = fleet(serde_json::json!({"replicas": 2}));
    let r = revision_of(&fleet);
    let taken = format!("chat-{r}-00000");
    let pods = vec![pod(&taken, &r, PodPhase::Failed, false)];
    let plan = run(&fleet, &pods);
    assert_eq!(
        plan.create,
        [format!("chat-{r}-00001"), format!("chat-{r}-00002")]
    );
}

#[test]
fn config_maps_go_once_no_pod_mounts_them() {
    let fleet = fleet(serde_json::json!({"replicas": 1}));
    let current = template(&fleet, V1_32);
    let mut old_pod = serving("a", "old");
    old_pod.config_map = Some("chat-gateway-old".into());
    old_pod.terminating = true;
    let pods = vec![old_pod, serving("b", &current.revision)];
    let config_maps = vec![
        current.config_map.clone(),
        "chat-gateway-old".to_string(),
        "chat-gateway-older".to_string(),
    ];
    let plan = decide(
        Observation {
            fleet: &fleet,
            pods: &pods,
            config_maps: &config_maps,
            server: V1_32,
            pod_monitor_api: false,
            now: Timestamp::UNIX_EPOCH,
        },
        &mut CountingNames::default(),
    );
    assert_eq!(plan.stale_config_maps, ["chat-gateway-older"]);
}

#[test]
fn a_fleet_name_that_cannot_name_pods_is_not_acted_on() {
    let mut fleet = fleet(serde_json::json!({"replicas": 1}));
    fleet.metadata.name = Some("my.fleet".into());
    let plan = run(&fleet, &[]);
    assert!(plan.create.is_empty());
    let degraded = conditions::find(&plan.status.conditions, DEGRADED).expect("Degraded");
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(
        degraded.message.contains("DNS label"),
        "{}",
        degraded.message
    );
}

#[test]
fn stuck_nodes_degrade_the_fleet_with_the_kubelet_reason() {
    let fleet = fleet(serde_json::json!({"replicas": 2}));
    let r = revision_of(&fleet);
    let mut stuck = pod("b", &r, PodPhase::Pending, false);
    stuck.problem = Some("ImagePullBackOff: no such image".into());
    let plan = run(&fleet, &[serving("a", &r), stuck]);
    let degraded = conditions::find(&plan.status.conditions, DEGRADED).expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "NodesFailing")
    );
    assert_eq!(degraded.message, "b: ImagePullBackOff: no such image");
    assert!(
        plan.remove.is_empty(),
        "a stuck node is reported, not churned"
    );
}

/// One row of the drain table: pods at a time, and what must follow.
struct DrainCase {
    name: &'static str,
    fleet: WebSocketFleet,
    pods: fn(&str) -> Vec<ObservedPod>,
    now_s: i64,
    creates: usize,
    /// (pod, window seconds)
    drains: Vec<(&'static str, u64)>,
    removes: Vec<(&'static str, RemovalReason)>,
    degraded: &'static str,
}

fn run_at(fleet: &WebSocketFleet, pods: &[ObservedPod], now_s: i64) -> Plan {
    decide(
        Observation {
            fleet,
            pods,
            config_maps: &[],
            server: V1_32,
            pod_monitor_api: false,
            now: Timestamp::from_second(now_s).expect("time"),
        },
        &mut CountingNames::default(),
    )
}

#[test]
fn drain_table() {
    use RemovalReason::*;
    let small = |extra: serde_json::Value| {
        let mut spec = serde_json::json!({
            "replicas": 1,
            "connections": {"handshakesPerSecond": 10},
            "drain": {"reconnectWindowSeconds": 5, "timeoutSeconds": 20, "maxUnavailable": 1}
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        fleet(spec)
    };
    let cases = vec![
        DrainCase {
            name: "scale down drains the least connected node, one at a time",
            fleet: small(serde_json::json!({})),
            pods: |r| {
                vec![
                    holding("a", r, 50),
                    holding("b", r, 10),
                    holding("c", r, 30),
                ]
            },
            now_s: 100,
            creates: 0,
            // 10 clients ÷ (10/s × 2 ready nodes left) → 1 s, so the configured 5 s.
            drains: vec![("b", 5)],
            removes: vec![],
            degraded: "AsExpected",
        },
        DrainCase {
            name: "a big node gets a window its peers can absorb",
            fleet: small(serde_json::json!({"replicas": 1})),
            pods: |r| vec![holding("a", r, 5000), holding("b", r, 900)],
            now_s: 100,
            creates: 0,
            // 900 ÷ (10/s × 1 node) = 90 s.
            drains: vec![("b", 90)],
            removes: vec![],
            degraded: "AsExpected",
        },
        DrainCase {
            name: "a draining node with clients is waited for and uses the drain slot",
            fleet: small(serde_json::json!({})),
            pods: |r| {
                vec![
                    holding("a", r, 50),
                    draining("b", r, 3, 200),
                    holding("c", r, 30),
                ]
            },
            now_s: 100,
            creates: 0,
            drains: vec![],
            removes: vec![],
            degraded: "AsExpected",
        },
        DrainCase {
            name: "an emptied node is deleted and the next one drained",
            fleet: small(serde_json::json!({})),
            pods: |r| {
                vec![
                    holding("a", r, 50),
                    draining("b", r, 0, 200),
                    holding("c", r, 30),
                ]
            },
            now_s: 100,
            creates: 0,
            drains: vec![("c", 5)],
            removes: vec![("b", Drained)],
            degraded: "AsExpected",
        },
        DrainCase {
            name: "a node past its drain deadline is deleted",
            fleet: small(serde_json::json!({"replicas": 2})),
            pods: |r| {
                vec![
                    holding("a", r, 50),
                    draining("b", r, 7, 90),
                    holding("c", r, 30),
                ]
            },
            now_s: 100,
            creates: 0,
            drains: vec![],
            removes: vec![("b", DrainDeadline)],
            degraded: "AsExpected",
        },
        DrainCase {
            name: "an unreachable running node is neither drained nor deleted",
            fleet: small(serde_json::json!({})),
            pods: |r| {
                let mut silent = holding("a", r, 1);
                silent.connections = None;
                silent.node = NodeView::Unreachable("timed out".into());
                vec![silent, holding("b", r, 50)]
            },
            now_s: 100,
            creates: 0,
            drains: vec![],
            removes: vec![],
            degraded: "NodesUnreachable",
        },
        DrainCase {
            name: "an unreachable node that is not running is deleted (no clients)",
            fleet: small(serde_json::json!({})),
            pods: |r| vec![pod("a", r, PodPhase::Pending, false), holding("b", r, 50)],
            now_s: 100,
            creates: 0,
            drains: vec![],
            removes: vec![("a", Surplus)],
            degraded: "AsExpected",
        },
        DrainCase {
            name: "a serving node the operator asked to drain is asked again",
            fleet: small(serde_json::json!({})),
            pods: |r| {
                let mut lost = draining("b", r, 4, 200);
                lost.node = report("b", NodeState::Serving, true, 4);
                vec![holding("a", r, 50), lost]
            },
            now_s: 100,
            creates: 0,
            drains: vec![("b", 5)],
            removes: vec![],
            degraded: "AsExpected",
        },
        DrainCase {
            name: "a new node not Ready within the rollout timeout stops the rollout",
            fleet: small(
                serde_json::json!({"replicas": 2, "drain": {"rolloutReadyTimeoutSeconds": 30}}),
            ),
            pods: |r| {
                let mut slow = pod("n", r, PodPhase::Running, false);
                slow.node = report("n", NodeState::Serving, false, 0);
                vec![holding("a", "old", 5), holding("b", "old", 5), slow]
            },
            now_s: 100,
            creates: 0,
            drains: vec![],
            removes: vec![],
            degraded: "RolloutStalled",
        },
        DrainCase {
            name: "rollout drains old nodes, never more than maxUnavailable at once",
            fleet: small(serde_json::json!({"replicas": 3})),
            pods: |r| {
                vec![
                    draining("a", "old", 2, 500),
                    holding("b", "old", 9),
                    holding("c", "old", 9),
                    holding("n1", r, 0),
                    holding("n2", r, 0),
                ]
            },
            now_s: 100,
            creates: 0,
            drains: vec![],
            removes: vec![],
            degraded: "AsExpected",
        },
    ];
    for case in cases {
        let revision = revision_of(&case.fleet);
        let pods = (case.pods)(&revision);
        let plan = run_at(&case.fleet, &pods, case.now_s);
        let name = case.name;
        assert_eq!(plan.create.len(), case.creates, "{name}: creates");
        let drains: Vec<(&str, u64)> = plan
            .drain
            .iter()
            .map(|d| (d.pod.as_str(), d.request.window_seconds))
            .collect();
        assert_eq!(drains, case.drains, "{name}: drains");
        assert_eq!(removed(&plan), case.removes, "{name}: removes");
        assert_eq!(
            condition(&plan, DEGRADED).1,
            case.degraded,
            "{name}: Degraded"
        );
        assert!(
            plan.remove.iter().all(|r| {
                let p = pods.iter().find(|p| p.name == r.pod).expect("known pod");
                p.phase != PodPhase::Running || p.drain_requested.is_some()
            }),
            "{name}: a running node is only deleted after its drain"
        );
    }
}

#[test]
fn drained_nodes_leave_the_scale_selector_and_show_their_phase() {
    let fleet = fleet(serde_json::json!({"replicas": 1}));
    let r = revision_of(&fleet);
    let pods = vec![holding("a", &r, 5), draining("b", &r, 3, 10_000)];
    let plan = run_at(&fleet, &pods, 100);
    assert_eq!(
        plan.status.selector,
        "app.kubernetes.io/name=wsfleet-gateway,wsfleet.io/fleet=chat,!wsfleet.io/draining"
    );
    assert_eq!(plan.status.replicas, 1, "the draining node is not counted");
    assert_eq!(plan.status.connections, 8, "its clients still are");
    let phases: Vec<(&str, NodePhase)> = plan
        .status
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.phase))
        .collect();
    assert_eq!(
        phases,
        [("a", NodePhase::Serving), ("b", NodePhase::Draining)]
    );
    assert_eq!(plan.requeue, Some(DRAIN_RECHECK));
}

#[test]
fn autoscaling_follows_connections_and_reports_capacity() {
    let fleet_with = |previous: Option<i32>| {
        let mut f = fleet(serde_json::json!({
            "connections": {"maxPerNode": 100},
            "autoscaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 2,
                            "targetConnectionsPerNode": 50, "scaleDownStabilizationSeconds": 60}
        }));
        f.status = previous.map(|desired| WebSocketFleetStatus {
            desired_replicas: desired,
            ..WebSocketFleetStatus::default()
        });
        f
    };
    let r = revision_of(&fleet_with(None));
    // One node with 95 clients: 2 wanted, grown at once.
    let plan = run_at(&fleet_with(Some(1)), &[holding("a", &r, 95)], 100);
    assert_eq!(plan.status.desired_replicas, 2);
    assert_eq!(plan.create.len(), 1);
    assert_eq!(condition(&plan, AT_CAPACITY).0, "False");
    assert!(plan.events.iter().any(|e| e.reason == "Scaled"));
    assert_eq!(plan.status.recommendations.len(), 1);
    // Two nodes at 90% of their cap at maxReplicas: AtCapacity.
    let full = [holding("a", &r, 90), holding("b", &r, 90)];
    let plan = run_at(&fleet_with(Some(2)), &full, 100);
    assert_eq!(
        condition(&plan, AT_CAPACITY),
        ("True".into(), "MaxReplicasNearCap".into())
    );
    // An unreachable node: sizes hold.
    let mut silent = holding("b", &r, 0);
    silent.connections = None;
    silent.node = NodeView::Unreachable("refused".into());
    let plan = run_at(&fleet_with(Some(2)), &[holding("a", &r, 1), silent], 100);
    assert_eq!(plan.status.desired_replicas, 2);
}

#[test]
fn pod_monitor_is_applied_reported_missing_or_deleted() {
    // (case, podMonitor enabled, API served, previous Monitored reason,
    //  step, Monitored (status, reason), Warning event)
    let cases = [
        (
            "off, never on",
            false,
            false,
            None,
            PodMonitorStep::Leave,
            None,
            false,
        ),
        (
            "off, never on, API served",
            false,
            true,
            None,
            PodMonitorStep::Leave,
            None,
            false,
        ),
        (
            "on, API served",
            true,
            true,
            None,
            PodMonitorStep::Apply,
            Some(("True", "PodMonitorApplied")),
            false,
        ),
        (
            "on, no API",
            true,
            false,
            None,
            PodMonitorStep::Leave,
            Some(("False", "PodMonitorCRDMissing")),
            true,
        ),
        (
            "on, no API, already reported",
            true,
            false,
            Some("PodMonitorCRDMissing"),
            PodMonitorStep::Leave,
            Some(("False", "PodMonitorCRDMissing")),
            false,
        ),
        (
            "on, API installed later",
            true,
            true,
            Some("PodMonitorCRDMissing"),
            PodMonitorStep::Apply,
            Some(("True", "PodMonitorApplied")),
            false,
        ),
        (
            "turned off",
            false,
            true,
            Some("PodMonitorApplied"),
            PodMonitorStep::Delete,
            None,
            false,
        ),
        (
            "turned off, never applied",
            false,
            false,
            Some("PodMonitorCRDMissing"),
            PodMonitorStep::Delete,
            None,
            false,
        ),
    ];
    for (case, enabled, api, previous, step, monitored, warned) in cases {
        let mut f = fleet(serde_json::json!({"monitoring": {"podMonitor": {"enabled": enabled}}}));
        let revision = revision_of(&f);
        if let Some(reason) = previous {
            f.status = Some(WebSocketFleetStatus {
                desired_replicas: 1,
                conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: "Monitored".into(),
                    status: if reason == "PodMonitorApplied" {
                        "True"
                    } else {
                        "False"
                    }
                    .into(),
                    reason: reason.into(),
                    message: String::new(),
                    observed_generation: Some(1),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                }],
                ..WebSocketFleetStatus::default()
            });
        }
        let pods = [serving("a", &revision)];
        let plan = decide(
            Observation {
                fleet: &f,
                pods: &pods,
                config_maps: &[],
                server: V1_32,
                pod_monitor_api: api,
                now: Timestamp::UNIX_EPOCH,
            },
            &mut CountingNames::default(),
        );
        assert_eq!(plan.pod_monitor, step, "{case}");
        let got = conditions::find(&plan.status.conditions, "Monitored")
            .map(|c| (c.status.as_str(), c.reason.as_str()));
        assert_eq!(got, monitored, "{case}");
        let warning = plan
            .events
            .iter()
            .any(|e| e.warning && e.reason == "PodMonitorCRDMissing");
        assert_eq!(warning, warned, "{case}");
    }
}

#[test]
fn an_invalid_spec_keeps_the_monitored_condition() {
    let mut f = fleet(serde_json::json!({"replicas": 3, "backplane": null}));
    f.spec.backplane = None;
    f.status = Some(WebSocketFleetStatus {
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Monitored".into(),
            status: "True".into(),
            reason: "PodMonitorApplied".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }],
        ..WebSocketFleetStatus::default()
    });
    let plan = run(&f, &[]);
    assert_eq!(
        condition(&plan, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    assert_eq!(
        condition(&plan, "Monitored"),
        ("True".into(), "PodMonitorApplied".into())
    );
    assert_eq!(plan.pod_monitor, PodMonitorStep::Leave);
}
