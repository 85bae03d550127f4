//! Table-driven tests of the decision function.

use super::names::testing::CountingNames;
use super::*;
use crate::resources::testing;

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

fn pod(name: &str, revision: &str, phase: PodPhase, ready: bool) -> ObservedPod {
    ObservedPod {
        name: name.into(),
        revision: Some(revision.into()),
        phase,
        ready,
        terminating: false,
        connections: None,
        config_map: None,
        problem: None,
    }
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

/// One row: a fleet, its pods (as a function of the current revision), and what must follow.
struct Case {
    name: &'static str,
    fleet: WebSocketFleet,
    pods: fn(&str) -> Vec<ObservedPod>,
    creates: usize,
    removes: Vec<(&'static str, RemovalReason)>,
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
            ready: ("True", "NodesReady"),
            progressing: ("True", "RollingOut"),
            degraded: ("False", "AsExpected"),
        },
        Case {
            // ...and surges the next new node while the replaced one drains.
            name: "rollout replaces an old node once the new one is ready",
            fleet: fleet(serde_json::json!({"replicas": 2})),
            pods: |r| vec![serving("a", "old"), serving("b", "old"), serving("n", r)],
            creates: 1,
            removes: vec![("a", Replaced)],
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
        "app.kubernetes.io/name=wsfleet-gateway,wsfleet.io/fleet=chat"
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
