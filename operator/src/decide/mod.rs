//! The decision: a pure function from what was observed (the fleet, its pods, the cluster
//! version, the time) to a [`Plan`] — pods to create, pods to remove, the new status and the
//! events to record. Nothing here talks to the API, so every decision is tested with tables.
//!
//! A spec the operator cannot act on produces a plan with no actions and a `Degraded` status.

pub mod autoscale;
pub mod names;
pub mod removal;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::conditions::{self, DEGRADED, PROGRESSING, READY, Wanted};
use crate::crd::{NodePhase, NodeStatus, WebSocketFleet, WebSocketFleetStatus};
use crate::observe::{ObservedPod, PodPhase};
use crate::resources::pod::{GatewayTemplate, template};
use crate::resources::selector_string;
use crate::resources::sysctl::{KubeVersion, plan as sysctl_plan};
use crate::validate::{self, scaled_count};
use names::{NameSource, pod_name};
use removal::{Limits, Removal, RemovalReason};

/// Everything a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub fleet: &'a WebSocketFleet,
    pub pods: &'a [ObservedPod],
    /// Names of the fleet's gateway ConfigMaps.
    pub config_maps: &'a [String],
    pub server: KubeVersion,
    pub now: Timestamp,
}

/// What to do this round.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Template of new pods; `None` when the spec is invalid (then nothing is applied).
    pub template: Option<GatewayTemplate>,
    /// Names of gateway pods to create from the template.
    pub create: Vec<String>,
    /// Pods to remove.
    pub remove: Vec<Removal>,
    /// Gateway ConfigMaps no pod mounts and the template no longer uses.
    pub stale_config_maps: Vec<String>,
    /// The fleet status to write.
    pub status: WebSocketFleetStatus,
    /// Events to record on the fleet.
    pub events: Vec<Note>,
}

/// An event to record on the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Decides the next step for a fleet.
pub fn decide(obs: Observation<'_>, names: &mut dyn NameSource) -> Plan {
    let previous = obs.fleet.status.clone().unwrap_or_default();
    let problems: Vec<String> = [
        validate::name(&obs.fleet.name_any()),
        validate::spec(&obs.fleet.spec),
    ]
    .into_iter()
    .filter_map(Result::err)
    .flat_map(|invalid| invalid.0)
    .collect();
    if problems.is_empty() {
        valid_spec_plan(obs, &previous, names)
    } else {
        invalid_spec_plan(obs, &previous, problems.join("; "))
    }
}

/// Pods that run (or are about to): not terminating and their process has not exited.
fn is_live(pod: &ObservedPod) -> bool {
    !pod.terminating && !matches!(pod.phase, PodPhase::Failed | PodPhase::Succeeded)
}

fn valid_spec_plan(
    obs: Observation<'_>,
    previous: &WebSocketFleetStatus,
    names: &mut dyn NameSource,
) -> Plan {
    let spec = &obs.fleet.spec;
    let template = template(obs.fleet, obs.server);
    let revision = template.revision.clone();
    let live: Vec<&ObservedPod> = obs.pods.iter().filter(|p| is_live(p)).collect();
    let live_count = count(live.len());
    let draining = count(obs.pods.iter().filter(|p| p.terminating).count());

    let desired = autoscale::desired(spec, live_count, known_connections(&live));
    let budget = scaled_count(&spec.drain.max_unavailable, desired.max(1))
        .unwrap_or(1)
        .max(1);
    let surge = scaled_count(&spec.drain.max_surge, desired.max(1)).unwrap_or(0);
    let limits = Limits {
        desired,
        surge,
        slots: (budget - draining).max(0),
    };

    let mut remove: Vec<Removal> = obs
        .pods
        .iter()
        .filter(|p| !p.terminating && matches!(p.phase, PodPhase::Failed | PodPhase::Succeeded))
        .map(|p| Removal {
            pod: p.name.clone(),
            reason: RemovalReason::Exited,
        })
        .collect();
    let removed = removal::choose(&live, &revision, limits);
    let remaining: Vec<&ObservedPod> = live
        .iter()
        .copied()
        .filter(|p| !removed.iter().any(|r| r.pod == p.name))
        .collect();
    remove.extend(removed);

    let create = new_pod_names(obs, &remaining, &revision, limits, names);
    let events = action_events(&create, &remove);
    let status = status(obs, previous, &template, desired, &remove);
    let stale_config_maps = stale_config_maps(obs, &template);
    Plan {
        template: Some(template),
        create,
        remove,
        stale_config_maps,
        status,
        events,
    }
}

/// Config versions nothing uses any more: not the template's, and mounted by no pod (even a
/// draining one, whose container could still restart and read it).
fn stale_config_maps(obs: Observation<'_>, template: &GatewayTemplate) -> Vec<String> {
    obs.config_maps
        .iter()
        .filter(|name| **name != template.config_map)
        .filter(|name| {
            !obs.pods
                .iter()
                .any(|p| p.config_map.as_deref() == Some(name.as_str()))
        })
        .cloned()
        .collect()
}

/// Names of the pods to create so that `remaining` reaches `desired` new-revision nodes,
/// within the surge allowance (and the scale-up step when autoscaling).
fn new_pod_names(
    obs: Observation<'_>,
    remaining: &[&ObservedPod],
    revision: &str,
    limits: Limits,
    names: &mut dyn NameSource,
) -> Vec<String> {
    let current = count(
        remaining
            .iter()
            .filter(|p| p.revision.as_deref() == Some(revision))
            .count(),
    );
    let has_old = current < count(remaining.len());
    let allowed = limits.desired + if has_old { limits.surge.max(0) } else { 0 };
    let mut wanted = (limits.desired - current)
        .min(allowed - count(remaining.len()))
        .max(0);
    let autoscaling = &obs.fleet.spec.autoscaling;
    if autoscaling.enabled {
        wanted = wanted.min(autoscaling.max_scale_up_step);
    }
    let fleet = obs.fleet.name_any();
    let mut created = Vec::new();
    // Bounded retries: a suffix clash with an existing pod is rare, never endless.
    for _ in 0..wanted.saturating_mul(4) {
        if count(created.len()) >= wanted {
            break;
        }
        let name = pod_name(&fleet, revision, &names.suffix());
        let taken = obs.pods.iter().any(|p| p.name == name) || created.contains(&name);
        if !taken {
            created.push(name);
        }
    }
    created
}

/// The fleet's connection total when every live node reported one.
fn known_connections(live: &[&ObservedPod]) -> Option<i64> {
    live.iter().map(|p| p.connections).sum()
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn action_events(create: &[String], remove: &[Removal]) -> Vec<Note> {
    let created = create.iter().map(|name| Note {
        warning: false,
        reason: "CreatingNode",
        message: format!("Creating gateway node {name}"),
    });
    let removed = remove.iter().map(|r| match r.reason {
        RemovalReason::Exited => Note {
            warning: true,
            reason: "ReplacingExitedNode",
            message: format!(
                "Gateway node {} exited; deleting it so it is replaced",
                r.pod
            ),
        },
        RemovalReason::Surplus => Note {
            warning: false,
            reason: "RemovingNode",
            message: format!(
                "Removing surplus gateway node {} (it drains on SIGTERM)",
                r.pod
            ),
        },
        RemovalReason::Replaced => Note {
            warning: false,
            reason: "ReplacingNode",
            message: format!(
                "Replacing gateway node {} of an old revision (it drains on SIGTERM)",
                r.pod
            ),
        },
    });
    created.chain(removed).collect()
}

fn status(
    obs: Observation<'_>,
    previous: &WebSocketFleetStatus,
    template: &GatewayTemplate,
    desired: i32,
    remove: &[Removal],
) -> WebSocketFleetStatus {
    let live: Vec<&ObservedPod> = obs.pods.iter().filter(|p| is_live(p)).collect();
    let ready = count(live.iter().filter(|p| p.ready).count());
    let old = live
        .iter()
        .filter(|p| p.revision.as_deref() != Some(template.revision.as_str()))
        .count();
    let exited = remove
        .iter()
        .filter(|r| r.reason == RemovalReason::Exited)
        .count();
    let live_count = count(live.len());

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
    } else if live_count != desired || ready < desired {
        Wanted {
            type_: PROGRESSING,
            status: true,
            reason: "Scaling",
            message: format!("{live_count} nodes, {ready} ready, {desired} desired"),
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
    let degraded = if !stuck.is_empty() {
        Wanted {
            type_: DEGRADED,
            status: true,
            reason: "NodesFailing",
            message: stuck.join("; "),
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

    WebSocketFleetStatus {
        observed_generation: obs.fleet.metadata.generation,
        replicas: live_count,
        ready_replicas: ready,
        desired_replicas: desired,
        connections: live.iter().filter_map(|p| p.connections).sum(),
        selector: selector_string(obs.fleet),
        revision: Some(template.revision.clone()),
        nodes: node_statuses(obs.pods),
        conditions: conditions::merge(
            &previous.conditions,
            vec![ready_condition, progressing, degraded],
            obs.fleet.metadata.generation,
            obs.now,
        ),
        sysctls: Some(sysctl_plan(&obs.fleet.spec.sysctls, obs.server).report),
        last_scale_time: scale_time(previous, desired, obs.now),
    }
}

/// When the desired size last changed: now if it changes (or was never recorded).
fn scale_time(previous: &WebSocketFleetStatus, desired: i32, now: Timestamp) -> Option<Time> {
    match &previous.last_scale_time {
        Some(time) if previous.desired_replicas == desired => Some(time.clone()),
        _ => Some(Time(now)),
    }
}

fn node_statuses(pods: &[ObservedPod]) -> Vec<NodeStatus> {
    pods.iter()
        .filter(|p| !matches!(p.phase, PodPhase::Failed | PodPhase::Succeeded))
        .map(|p| NodeStatus {
            name: p.name.clone(),
            phase: if p.terminating {
                NodePhase::Draining
            } else if p.ready {
                NodePhase::Serving
            } else {
                NodePhase::Starting
            },
            connections: p.connections.unwrap_or(0),
            revision: p.revision.clone().unwrap_or_default(),
        })
        .collect()
}

/// No action; the status says why, and keeps the counts observed.
fn invalid_spec_plan(
    obs: Observation<'_>,
    previous: &WebSocketFleetStatus,
    reason: String,
) -> Plan {
    let live: Vec<&ObservedPod> = obs.pods.iter().filter(|p| is_live(p)).collect();
    let already_reported = conditions::find(&previous.conditions, DEGRADED)
        .is_some_and(|c| c.status == "True" && c.reason == "InvalidSpec" && c.message == reason);
    let events = if already_reported {
        Vec::new()
    } else {
        vec![Note {
            warning: true,
            reason: "InvalidSpec",
            message: format!("Not acting on this spec: {reason}"),
        }]
    };
    let wanted = vec![
        Wanted {
            type_: READY,
            status: false,
            reason: "InvalidSpec",
            message: "the spec cannot be acted on; see Degraded".into(),
        },
        Wanted {
            type_: PROGRESSING,
            status: false,
            reason: "InvalidSpec",
            message: "paused until the spec is fixed".into(),
        },
        Wanted {
            type_: DEGRADED,
            status: true,
            reason: "InvalidSpec",
            message: reason,
        },
    ];
    let status = WebSocketFleetStatus {
        observed_generation: obs.fleet.metadata.generation,
        replicas: count(live.len()),
        ready_replicas: count(live.iter().filter(|p| p.ready).count()),
        desired_replicas: previous.desired_replicas,
        connections: live.iter().filter_map(|p| p.connections).sum(),
        selector: selector_string(obs.fleet),
        revision: previous.revision.clone(),
        nodes: node_statuses(obs.pods),
        conditions: conditions::merge(
            &previous.conditions,
            wanted,
            obs.fleet.metadata.generation,
            obs.now,
        ),
        sysctls: previous.sysctls.clone(),
        last_scale_time: previous.last_scale_time.clone(),
    };
    Plan {
        template: None,
        create: Vec::new(),
        remove: Vec::new(),
        stale_config_maps: Vec::new(),
        status,
        events,
    }
}

#[cfg(test)]
mod tests;
