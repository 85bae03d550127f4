//! The decision: a pure function from what was observed (the fleet, its pods and what each
//! node reported, the cluster version, the time) to a [`Plan`] — pods to create, nodes to
//! drain, pods to delete, the new status and the events to record. Nothing here talks to the
//! API or the nodes, so every decision is tested with tables.
//!
//! A node that may hold clients leaves only by draining: it is told to drain, and deleted once
//! empty or past its deadline. A spec the operator cannot act on produces a plan with no
//! actions and a `Degraded` status.

pub mod autoscale;
pub mod drain;
pub mod facts;
pub mod names;
pub mod removal;
mod status;
use status::{Facts, fleet_status, node_statuses};

use std::net::SocketAddr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::conditions::{self, DEGRADED, MONITORED, PROGRESSING, READY, Wanted};
use crate::crd::{WebSocketFleet, WebSocketFleetStatus};
use crate::resources::pod::{GatewayTemplate, template};
use crate::resources::serving_selector_string;
use crate::resources::sysctl::KubeVersion;
use crate::validate::{self, scaled_count};
use facts::{NodeView, ObservedPod, PodPhase};
use names::{NameSource, pod_name};
use removal::{Limits, Removal, RemovalReason};
use wsfleet_api::DrainRequest;

/// Everything a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub fleet: &'a WebSocketFleet,
    pub pods: &'a [ObservedPod],
    /// Names of the fleet's gateway ConfigMaps.
    pub config_maps: &'a [String],
    pub server: KubeVersion,
    /// Whether the cluster serves the PodMonitor API; looked up only for a fleet that enables a
    /// PodMonitor (false otherwise).
    pub pod_monitor_api: bool,
    pub now: Timestamp,
}

/// What to do this round.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Template of new pods; `None` when the spec is invalid (then nothing is applied).
    pub template: Option<GatewayTemplate>,
    /// Names of gateway pods to create from the template.
    pub create: Vec<String>,
    /// Pods to delete.
    pub remove: Vec<Removal>,
    /// Nodes to tell to drain (`POST /drain`).
    pub drain: Vec<DrainOrder>,
    /// Gateway ConfigMaps no pod mounts and the template no longer uses.
    pub stale_config_maps: Vec<String>,
    /// What to do with the fleet's PodMonitor.
    pub pod_monitor: PodMonitorStep,
    /// The fleet status to write.
    pub status: WebSocketFleetStatus,
    /// Events to record on the fleet.
    pub events: Vec<Note>,
    /// When to look again even without a Kubernetes change: node state (connections, drain
    /// progress) changes without one.
    pub requeue: Option<Duration>,
}

/// A node to drain, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainOrder {
    pub pod: String,
    pub address: SocketAddr,
    pub request: DrainRequest,
    /// When the pod is deleted whatever it holds (recorded on the pod).
    pub deadline: Timestamp,
    pub reason: RemovalReason,
    /// Whether this repeats a drain the node should already be running.
    pub repeat: bool,
}

/// What happens to the fleet's PodMonitor this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodMonitorStep {
    Apply,
    Delete,
    /// Nothing to apply (none wanted, or no PodMonitor API to apply it to) or to delete.
    Leave,
}

/// Recheck interval while nodes drain: drain progress is only seen by asking.
const DRAIN_RECHECK: Duration = Duration::from_secs(5);
/// Recheck interval of an autoscaled fleet: connections change without any Kubernetes event.
const AUTOSCALE_RECHECK: Duration = Duration::from_secs(15);

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

/// Live pods that serve: not draining. The fleet's size is counted over these.
fn is_serving_set(pod: &ObservedPod) -> bool {
    is_live(pod) && !pod.is_draining()
}

fn valid_spec_plan(
    obs: Observation<'_>,
    previous: &WebSocketFleetStatus,
    names: &mut dyn NameSource,
) -> Plan {
    let spec = &obs.fleet.spec;
    let template = template(obs.fleet, obs.server);
    let revision = template.revision.clone();
    let live: Vec<&ObservedPod> = obs.pods.iter().filter(|p| is_serving_set(p)).collect();
    let leaving: Vec<&ObservedPod> = obs
        .pods
        .iter()
        .filter(|p| is_live(p) && p.is_draining())
        .collect();
    let live_count = count(live.len());
    // Nodes done draining are deleted this round, so their drain slots are free again.
    let (finished, again) = follow_drains(obs, &leaving, &live);
    let draining = count(obs.pods.iter().filter(|p| p.terminating).count())
        + count(leaving.len() - finished.len());

    let current = if obs.fleet.status.is_some() {
        previous.desired_replicas
    } else {
        live_count
    };
    // Clients of draining nodes come back to the fleet, so they count towards its size.
    let sizing = autoscale::size(
        spec,
        current,
        known_connections(&live, &leaving),
        &previous.recommendations,
        obs.now,
    );
    let desired = sizing.desired;
    let budget = validate::unavailable_budget(&spec.drain, desired);
    let surge = scaled_count(&spec.drain.max_surge, desired.max(1)).unwrap_or(0);
    let stalled = stalled_rollout(obs, &live, &revision);
    let limits = Limits {
        desired,
        surge,
        slots: (budget - draining).max(0),
        replace: stalled.is_empty(),
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
    let chosen = removal::choose(&live, &revision, limits);
    let remaining: Vec<&ObservedPod> = live
        .iter()
        .copied()
        .filter(|p| !chosen.iter().any(|r| r.pod == p.name))
        .collect();
    let still_draining = leaving.len() - finished.len();
    let (mut drains, deletes) = drain_or_delete(obs, &chosen, &remaining, still_draining);
    // Draining nodes are pods until they are deleted: they count against replicas + maxSurge.
    let draining_after = still_draining + drains.len();
    remove.extend(deletes);
    remove.extend(finished);
    drains.extend(again);

    let create = new_pod_names(obs, &remaining, draining_after, &revision, limits, names);
    let mut events = action_events(&create, &remove, &drains);
    if !stalled.is_empty() && !already(previous, DEGRADED, "RolloutStalled") {
        events.push(Note {
            warning: true,
            reason: "RolloutStalled",
            message: format!(
                "Rollout to {revision} stopped: {} not Ready within {}s",
                stalled.join(", "),
                spec.drain.rollout_ready_timeout_seconds
            ),
        });
    }
    let (pod_monitor, monitored) = pod_monitor_step(obs, previous);
    let missing_reported = conditions::find(&previous.conditions, MONITORED)
        .is_some_and(|c| c.reason == POD_MONITOR_CRD_MISSING);
    if let Some(wanted) = monitored.as_ref().filter(|w| !w.status)
        && !missing_reported
    {
        events.push(Note {
            warning: true,
            reason: POD_MONITOR_CRD_MISSING,
            message: wanted.message.clone(),
        });
    }
    let facts = Facts {
        desired,
        drains: &drains,
        remove: &remove,
        stalled: &stalled,
        leaving: &leaving,
        monitored,
    };
    let mut status = fleet_status(obs, previous, &template, &facts);
    status.recommendations = sizing.recommendations;
    if status.desired_replicas != previous.desired_replicas && obs.fleet.status.is_some() {
        events.push(Note {
            warning: false,
            reason: "Scaled",
            message: format!(
                "Desired nodes {} → {} ({} connections)",
                previous.desired_replicas, status.desired_replicas, status.connections
            ),
        });
    }
    let requeue = if !leaving.is_empty() || !drains.is_empty() || draining > 0 {
        Some(DRAIN_RECHECK)
    } else if spec.autoscaling.enabled || obs.pods.iter().any(|p| p.unreachable()) {
        Some(AUTOSCALE_RECHECK)
    } else {
        None
    };
    let stale_config_maps = stale_config_maps(obs, &template);
    Plan {
        template: Some(template),
        create,
        remove,
        drain: drains,
        stale_config_maps,
        pod_monitor,
        status,
        events,
        requeue,
    }
}

/// Reason of `Monitored=False` (and of its Warning event) on a cluster without PodMonitors.
const POD_MONITOR_CRD_MISSING: &str = "PodMonitorCRDMissing";

/// What to do with the fleet's PodMonitor, and the `Monitored` condition while one is enabled.
/// A missing PodMonitor API is reported, not failed: the fleet serves clients either way.
fn pod_monitor_step(
    obs: Observation<'_>,
    previous: &WebSocketFleetStatus,
) -> (PodMonitorStep, Option<Wanted>) {
    let settings = &obs.fleet.spec.monitoring.pod_monitor;
    match (settings.enabled, obs.pod_monitor_api) {
        (true, true) => (
            PodMonitorStep::Apply,
            Some(Wanted {
                type_: MONITORED,
                status: true,
                reason: "PodMonitorApplied",
                message: format!(
                    "PodMonitor {} scrapes /metrics on port admin every {}",
                    obs.fleet.name_any(),
                    settings.interval
                ),
            }),
        ),
        (true, false) => (
            PodMonitorStep::Leave,
            Some(Wanted {
                type_: MONITORED,
                status: false,
                reason: POD_MONITOR_CRD_MISSING,
                message: "monitoring.podMonitor.enabled is true but the cluster has no \
                          PodMonitor API (monitoring.coreos.com/v1): install the Prometheus \
                          Operator's CRDs; the fleet runs unscraped until then"
                    .into(),
            }),
        ),
        // Only a fleet whose status shows it had one enabled can own a PodMonitor; asking
        // for every other fleet would be a DELETE each reconcile, usually of an unknown kind.
        (false, _) if conditions::find(&previous.conditions, MONITORED).is_some() => {
            (PodMonitorStep::Delete, None)
        }
        (false, _) => (PodMonitorStep::Leave, None),
    }
}

/// Whether the previous status already had condition `type_` True with `reason`.
fn already(previous: &WebSocketFleetStatus, type_: &str, reason: &str) -> bool {
    conditions::find(&previous.conditions, type_)
        .is_some_and(|c| c.status == "True" && c.reason == reason)
}

/// New-revision nodes that were not Ready within the rollout timeout while old nodes remain:
/// the rollout stops there rather than drain more old nodes for a revision that does not start.
fn stalled_rollout(obs: Observation<'_>, live: &[&ObservedPod], revision: &str) -> Vec<String> {
    let has_old = live.iter().any(|p| p.revision.as_deref() != Some(revision));
    if !has_old {
        return Vec::new();
    }
    let timeout = SignedDuration::from_secs(i64::from(
        obs.fleet.spec.drain.rollout_ready_timeout_seconds,
    ));
    live.iter()
        .filter(|p| p.revision.as_deref() == Some(revision) && !p.ready)
        .filter(|p| {
            p.created
                .and_then(|created| created.checked_add(timeout).ok())
                .is_some_and(|limit| obs.now >= limit)
        })
        .map(|p| p.name.clone())
        .collect()
}

/// How each chosen pod goes: a running node that answered is drained with a window sized by
/// the reconnect budget; a pod that is not running holds no clients and is deleted.
fn drain_or_delete(
    obs: Observation<'_>,
    chosen: &[Removal],
    remaining: &[&ObservedPod],
    already_draining: usize,
) -> (Vec<DrainOrder>, Vec<Removal>) {
    let ready_left = count(remaining.iter().filter(|p| p.ready).count());
    let to_drain: Vec<(&Removal, &ObservedPod, SocketAddr)> = chosen
        .iter()
        .filter_map(|r| {
            let pod = obs.pods.iter().find(|p| p.name == r.pod)?;
            let address = pod.admin?;
            (pod.phase == PodPhase::Running && matches!(pod.node, NodeView::Reported(_)))
                .then_some((r, pod, address))
        })
        .collect();
    let at_once = count(already_draining + to_drain.len());
    let drains = to_drain
        .iter()
        .map(|(r, pod, address)| order(obs, pod, *address, r.reason, ready_left, at_once, false))
        .collect();
    let deletes = chosen
        .iter()
        .filter(|r| !to_drain.iter().any(|(d, _, _)| d.pod == r.pod))
        .cloned()
        .collect();
    (drains, deletes)
}

/// A drain order for `pod` with budget-sized timing.
fn order(
    obs: Observation<'_>,
    pod: &ObservedPod,
    address: SocketAddr,
    reason: RemovalReason,
    ready_left: i32,
    at_once: i32,
    repeat: bool,
) -> DrainOrder {
    let spec = &obs.fleet.spec;
    let timing = drain::timing(
        &spec.drain,
        spec.connections.handshakes_per_second,
        pod.connections.unwrap_or(0),
        ready_left,
        at_once,
    );
    let deadline = pod
        .drain_requested
        .and_then(|d| d.deadline)
        .unwrap_or_else(|| drain::deadline_after(obs.now, timing.deadline_seconds));
    DrainOrder {
        pod: pod.name.clone(),
        address,
        request: DrainRequest {
            window_seconds: timing.window_seconds,
            deadline_seconds: timing.deadline_seconds,
            reason: Some(
                match reason {
                    RemovalReason::Replaced => "rollout",
                    _ => "scale-down",
                }
                .into(),
            ),
            count: None,
        },
        deadline,
        reason,
        repeat,
    }
}

/// Draining nodes: delete those done or past their deadline, ask again those that lost the
/// request, wait for the rest. `serving` are the nodes that take their clients.
fn follow_drains(
    obs: Observation<'_>,
    leaving: &[&ObservedPod],
    serving: &[&ObservedPod],
) -> (Vec<Removal>, Vec<DrainOrder>) {
    let ready_left = count(serving.iter().filter(|p| p.ready).count());
    let at_once = count(leaving.len());
    let mut finished = Vec::new();
    let mut again = Vec::new();
    for pod in leaving {
        match drain::next(pod, obs.now) {
            drain::Next::Wait => {}
            drain::Next::DeleteDrained => finished.push(Removal {
                pod: pod.name.clone(),
                reason: RemovalReason::Drained,
            }),
            drain::Next::DeleteAtDeadline => finished.push(Removal {
                pod: pod.name.clone(),
                reason: RemovalReason::DrainDeadline,
            }),
            drain::Next::AskAgain => {
                if let Some(address) = pod.admin {
                    again.push(order(
                        obs,
                        pod,
                        address,
                        RemovalReason::Surplus,
                        ready_left,
                        at_once,
                        true,
                    ));
                }
            }
        }
    }
    (finished, again)
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
/// Names of the pods to create: up to the desired count of current-revision nodes, while all
/// pods that are not terminating (the `remaining` live ones and `draining` ones) stay within
/// the desired count plus the surge a rollout may use.
fn new_pod_names(
    obs: Observation<'_>,
    remaining: &[&ObservedPod],
    draining: usize,
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
        .min(allowed - count(remaining.len() + draining))
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

/// The fleet's connection total when every live node (serving or draining) reported one.
fn known_connections(live: &[&ObservedPod], leaving: &[&ObservedPod]) -> Option<i64> {
    live.iter().chain(leaving).map(|p| p.connections).sum()
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn action_events(create: &[String], remove: &[Removal], drains: &[DrainOrder]) -> Vec<Note> {
    let created = create.iter().map(|name| Note {
        warning: false,
        reason: "CreatingNode",
        message: format!("Creating gateway node {name}"),
    });
    let drained = drains.iter().map(|d| Note {
        warning: false,
        reason: if d.repeat {
            "RepeatingDrain"
        } else {
            "DrainingNode"
        },
        message: format!(
            "Draining gateway node {} ({}): reconnect window {}s, deleted by {}",
            d.pod,
            d.request.reason(),
            d.request.window_seconds,
            d.deadline
        ),
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
        RemovalReason::Surplus | RemovalReason::Replaced => Note {
            warning: false,
            reason: "RemovingIdleNode",
            message: format!("Deleting gateway node {} (not running, no clients)", r.pod),
        },
        RemovalReason::Drained => Note {
            warning: false,
            reason: "NodeDrained",
            message: format!("Gateway node {} drained; deleting it", r.pod),
        },
        RemovalReason::DrainDeadline => Note {
            warning: true,
            reason: "DrainDeadlinePassed",
            message: format!(
                "Gateway node {} passed its drain deadline; deleting it with the clients left",
                r.pod
            ),
        },
    });
    created.chain(drained).chain(removed).collect()
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
    let mut conditions = conditions::merge(
        &previous.conditions,
        wanted,
        obs.fleet.metadata.generation,
        obs.now,
    );
    // Kept as it was: nothing is applied meanwhile, and it records that a PodMonitor may exist.
    conditions.extend(conditions::find(&previous.conditions, MONITORED).cloned());
    let status = WebSocketFleetStatus {
        observed_generation: obs.fleet.metadata.generation,
        replicas: count(live.len()),
        ready_replicas: count(live.iter().filter(|p| p.ready).count()),
        desired_replicas: previous.desired_replicas,
        connections: live.iter().filter_map(|p| p.connections).sum(),
        selector: serving_selector_string(obs.fleet),
        revision: previous.revision.clone(),
        nodes: node_statuses(obs.pods, &[]),
        conditions,
        sysctls: previous.sysctls.clone(),
        last_scale_time: previous.last_scale_time.clone(),
        recommendations: previous.recommendations.clone(),
    };
    Plan {
        template: None,
        create: Vec::new(),
        remove: Vec::new(),
        drain: Vec::new(),
        stale_config_maps: Vec::new(),
        pod_monitor: PodMonitorStep::Leave,
        status,
        events,
        requeue: None,
    }
}

#[cfg(test)]
mod tests;
