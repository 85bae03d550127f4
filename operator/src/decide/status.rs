//! The fleet's status as a decision leaves it: counts, per-node entries and the conditions
//! (Ready, Progressing, Degraded, AtCapacity, Monitored), built from the observation and what
//! the plan does this round. Pure, like the rest of `decide`.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::facts::{NodeView, ObservedPod, PodPhase};
use super::removal::{Removal, RemovalReason};
use super::{DrainOrder, Observation, autoscale, count, is_serving_set};
use crate::conditions::{self, AT_CAPACITY, DEGRADED, PROGRESSING, READY, Wanted};
use crate::crd::{NodePhase, NodeStatus, WebSocketFleetStatus};
use crate::resources::pod::GatewayTemplate;
use crate::resources::serving_selector_string;
use crate::resources::sysctl::plan as sysctl_plan;
use wsfleet_api::NodeState;

/// What the status needs beyond the observation.
pub(super) struct Facts<'a> {
    pub desired: i32,
    pub drains: &'a [DrainOrder],
    pub remove: &'a [Removal],
    pub stalled: &'a [String],
    pub leaving: &'a [&'a ObservedPod],
    pub monitored: Option<Wanted>,
}

pub(super) fn fleet_status(
    obs: Observation<'_>,
    previous: &WebSocketFleetStatus,
    template: &GatewayTemplate,
    facts: &Facts<'_>,
) -> WebSocketFleetStatus {
    let desired = facts.desired;
    let live: Vec<&ObservedPod> = obs.pods.iter().filter(|p| is_serving_set(p)).collect();
    let ready = count(live.iter().filter(|p| p.ready).count());
    let old = live
        .iter()
        .filter(|p| p.revision.as_deref() != Some(template.revision.as_str()))
        .count();
    let exited = facts
        .remove
        .iter()
        .filter(|r| r.reason == RemovalReason::Exited)
        .count();
    let live_count = count(live.len());
    let connections: i64 = live
        .iter()
        .chain(facts.leaving)
        .filter_map(|p| p.connections)
        .sum();

    let ready_condition = if ready >= desired {
        Wanted {
            type_: READY,
            status: true,
            reason: "NodesReady",
            message: format!("{ready} of {desired} nodes ready"),
        }
    } else {
        Wanted {
            type_: READY,
            status: false,
            reason: "NodesNotReady",
            message: format!("{ready} of {desired} nodes ready"),
        }
    };
    let progressing = if old > 0 {
        Wanted {
            type_: PROGRESSING,
            status: true,
            reason: "RollingOut",
            message: format!(
                "{old} nodes run an old revision; rolling to {}",
                template.revision
            ),
        }
    } else if live_count != desired || ready < desired || !facts.leaving.is_empty() {
        Wanted {
            type_: PROGRESSING,
            status: true,
            reason: "Scaling",
            message: format!(
                "{live_count} nodes, {ready} ready, {} draining, {desired} desired",
                facts.leaving.len()
            ),
        }
    } else {
        Wanted {
            type_: PROGRESSING,
            status: false,
            reason: "Complete",
            message: format!("{desired} nodes of revision {} ready", template.revision),
        }
    };
    let stuck: Vec<String> = live
        .iter()
        .filter_map(|p| {
            p.problem
                .as_ref()
                .map(|problem| format!("{}: {problem}", p.name))
        })
        .collect();
    let unreachable: Vec<String> = live
        .iter()
        .chain(facts.leaving)
        .filter(|p| p.ready && p.unreachable())
        .map(|p| p.name.clone())
        .collect();
    let degraded = if !stuck.is_empty() {
        Wanted {
            type_: DEGRADED,
            status: true,
            reason: "NodesFailing",
            message: stuck.join("; "),
        }
    } else if !facts.stalled.is_empty() {
        Wanted {
            type_: DEGRADED,
            status: true,
            reason: "RolloutStalled",
            message: format!(
                "new nodes not Ready within {}s: {}; old nodes are kept",
                obs.fleet.spec.drain.rollout_ready_timeout_seconds,
                facts.stalled.join(", ")
            ),
        }
    } else if !unreachable.is_empty() {
        Wanted {
            type_: DEGRADED,
            status: true,
            reason: "NodesUnreachable",
            message: format!(
                "admin API not answering (kept, not drained or deleted): {}",
                unreachable.join(", ")
            ),
        }
    } else if exited > 0 {
        Wanted {
            type_: DEGRADED,
            status: true,
            reason: "NodesExited",
            message: format!("{exited} gateway nodes exited and are being replaced"),
        }
    } else {
        Wanted {
            type_: DEGRADED,
            status: false,
            reason: "AsExpected",
            message: String::new(),
        }
    };
    let at_capacity = if autoscale::at_capacity(
        &obs.fleet.spec,
        desired,
        live_count.max(desired),
        connections,
    ) {
        Wanted {
            type_: AT_CAPACITY,
            status: true,
            reason: "MaxReplicasNearCap",
            message: format!(
                "{live_count} nodes (maxReplicas) hold {connections} connections, at least 90% of their caps"
            ),
        }
    } else {
        Wanted {
            type_: AT_CAPACITY,
            status: false,
            reason: "HasRoom",
            message: String::new(),
        }
    };

    WebSocketFleetStatus {
        observed_generation: obs.fleet.metadata.generation,
        replicas: live_count,
        ready_replicas: ready,
        desired_replicas: desired,
        connections,
        selector: serving_selector_string(obs.fleet),
        revision: Some(template.revision.clone()),
        nodes: node_statuses(obs.pods, facts.drains),
        conditions: conditions::merge(
            &previous.conditions,
            [ready_condition, progressing, degraded, at_capacity]
                .into_iter()
                .chain(facts.monitored.clone())
                .collect(),
            obs.fleet.metadata.generation,
            obs.now,
        ),
        sysctls: Some(sysctl_plan(&obs.fleet.spec.sysctls, obs.server).report),
        last_scale_time: scale_time(previous, desired, obs.now),
        recommendations: Vec::new(),
    }
}

/// When the desired size last changed: now if it changes (or was never recorded).
fn scale_time(previous: &WebSocketFleetStatus, desired: i32, now: Timestamp) -> Option<Time> {
    match &previous.last_scale_time {
        Some(time) if previous.desired_replicas == desired => Some(time.clone()),
        _ => Some(Time(now)),
    }
}

/// One entry per pod whose process has not exited; nodes told to drain this round already
/// show as draining.
pub(super) fn node_statuses(pods: &[ObservedPod], drains: &[DrainOrder]) -> Vec<NodeStatus> {
    pods.iter()
        .filter(|p| !matches!(p.phase, PodPhase::Failed | PodPhase::Succeeded))
        .map(|p| NodeStatus {
            name: p.name.clone(),
            phase: match p.state() {
                Some(NodeState::Drained) => NodePhase::Drained,
                _ if p.terminating || p.is_draining() || drains.iter().any(|d| d.pod == p.name) => {
                    NodePhase::Draining
                }
                _ if p.ready => NodePhase::Serving,
                _ => NodePhase::Starting,
            },
            connections: p.connections.unwrap_or(0),
            revision: p.revision.clone().unwrap_or_default(),
            unreachable: match &p.node {
                NodeView::Unreachable(why) => Some(why.clone()),
                _ => None,
            },
        })
        .collect()
}
