//! The facts a decision reads about each gateway pod: Kubernetes' view of it (phase,
//! readiness, revision, the operator's drain mark) and its node's own `/status`. Built from a
//! `Pod` and a report here, without I/O; `observe.rs` does the listing and the asking.

use std::net::SocketAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use wsfleet_api::{NodeState, StatusReport};

use crate::resources::pod::CONFIG_VOLUME;
use crate::resources::{DRAIN_DEADLINE_ANNOTATION, DRAINING_LABEL, REVISION_LABEL};

/// What a node said about itself.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeView {
    /// Not asked: the pod has no address yet or its process has exited.
    NotAsked,
    /// Asked, and no usable answer came back (why).
    Unreachable(String),
    /// Its `/status` (boxed: it carries the node's settings).
    Reported(Box<StatusReport>),
}

/// Kubernetes' view of a pod's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// One gateway pod as decisions see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPod {
    /// Pod name = node id.
    pub name: String,
    /// Revision label, if the pod has one.
    pub revision: Option<String>,
    pub phase: PodPhase,
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// Deletion has started (the gateway is draining on SIGTERM).
    pub terminating: bool,
    /// Live connections, when known from the node's `/status`.
    pub connections: Option<i64>,
    /// The ConfigMap its config volume mounts.
    pub config_map: Option<String>,
    /// Why a container cannot run, when the kubelet says it is stuck (bad image, missing
    /// Secret, crash loop): `"<reason>: <message>"`.
    pub problem: Option<String>,
    /// When the pod was created.
    pub created: Option<Timestamp>,
    /// Where its admin API answers.
    pub admin: Option<SocketAddr>,
    /// Its own report, if it gave one.
    pub node: NodeView,
    /// The operator asked it to drain (the `wsfleet.io/draining` label), with the deadline it
    /// gave, so a restarted operator knows which drains it started.
    pub drain_requested: Option<DrainRequested>,
}

/// The operator's record, on the pod, of a drain it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainRequested {
    /// When the node was told to be gone; `None` if the annotation is missing or unreadable.
    pub deadline: Option<Timestamp>,
}

impl ObservedPod {
    /// The node's state as it reported it.
    pub fn state(&self) -> Option<NodeState> {
        match &self.node {
            NodeView::Reported(report) => Some(report.state),
            _ => None,
        }
    }

    /// The node is on its way out by the operator's doing or its own: asked to drain, or it
    /// reports draining/drained. A terminating pod is counted separately.
    pub fn is_draining(&self) -> bool {
        self.drain_requested.is_some()
            || matches!(self.state(), Some(NodeState::Draining | NodeState::Drained))
    }

    /// A running pod whose admin API did not answer: it may hold clients, so it is never
    /// deleted blindly.
    pub fn unreachable(&self) -> bool {
        self.phase == PodPhase::Running && !matches!(self.node, NodeView::Reported(_))
    }
}

impl ObservedPod {
    /// The facts of `pod`; missing fields read as "not yet" (Pending, not ready).
    pub fn from_pod(pod: &Pod) -> ObservedPod {
        let status = pod.status.as_ref();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some("Pending") | None => PodPhase::Pending,
            Some(_) => PodPhase::Unknown,
        };
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        ObservedPod {
            name: pod.name_any(),
            revision: pod.labels().get(REVISION_LABEL).cloned(),
            phase,
            ready,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            connections: None,
            config_map: config_map_of(pod),
            problem: stuck_container(pod),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            admin: None,
            node: NodeView::NotAsked,
            drain_requested: drain_requested(pod),
        }
    }

    /// Records the node's answer (or its failure to answer).
    pub fn with_report(mut self, answer: Result<StatusReport, String>) -> ObservedPod {
        match answer {
            Ok(report) => {
                self.connections = Some(i64::try_from(report.connections).unwrap_or(i64::MAX));
                self.node = NodeView::Reported(Box::new(report));
            }
            Err(why) => self.node = NodeView::Unreachable(why),
        }
        self
    }
}

fn drain_requested(pod: &Pod) -> Option<DrainRequested> {
    pod.labels().get(DRAINING_LABEL)?;
    let deadline = pod
        .annotations()
        .get(DRAIN_DEADLINE_ANNOTATION)
        .and_then(|t| t.parse::<Timestamp>().ok());
    Some(DrainRequested { deadline })
}

/// Waiting reasons that will not clear by themselves.
const STUCK_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn stuck_container(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let containers = status.init_container_statuses.iter().flatten();
    containers
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| {
            w.reason
                .as_deref()
                .is_some_and(|reason| STUCK_REASONS.contains(&reason))
        })
        .map(|w| {
            let reason = w.reason.clone().unwrap_or_default();
            match w.message.as_deref() {
                Some(message) if !message.is_empty() => format!("{reason}: {message}"),
                _ => reason,
            }
        })
}

fn config_map_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == CONFIG_VOLUME)?
        .config_map
        .as_ref()
        .map(|c| c.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(phase: Option<&str>, ready: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("chat-r1-aaaaa".into());
        pod.metadata.labels = Some([(REVISION_LABEL.to_string(), "r1".to_string())].into());
        pod.status = Some(PodStatus {
            phase: phase.map(Into::into),
            conditions: ready.map(|status| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    ..PodCondition::default()
                }]
            }),
            ..PodStatus::default()
        });
        pod
    }

    #[test]
    fn stuck_containers_are_reported_with_the_kubelet_reason() {
        use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus};
        let waiting = |reason: &str, message: Option<&str>| ContainerStatus {
            name: "gateway".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: message.map(Into::into),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let mut stuck = pod(Some("Pending"), None);
        if let Some(status) = stuck.status.as_mut() {
            status.container_statuses = Some(vec![waiting(
                "CreateContainerConfigError",
                Some("secret \"redis\" not found"),
            )]);
        }
        assert_eq!(
            ObservedPod::from_pod(&stuck).problem.as_deref(),
            Some("CreateContainerConfigError: secret \"redis\" not found")
        );
        let mut starting = pod(Some("Pending"), None);
        if let Some(status) = starting.status.as_mut() {
            status.container_statuses = Some(vec![waiting("ContainerCreating", None)]);
        }
        assert_eq!(
            ObservedPod::from_pod(&starting).problem,
            None,
            "normal start is no problem"
        );
    }

    #[test]
    fn reads_phase_readiness_revision_and_deletion() {
        let running = ObservedPod::from_pod(&pod(Some("Running"), Some("True")));
        assert_eq!(running.phase, PodPhase::Running);
        assert!(running.ready);
        assert_eq!(running.revision.as_deref(), Some("r1"));
        assert!(!running.terminating);

        let unready = ObservedPod::from_pod(&pod(Some("Running"), Some("False")));
        assert!(!unready.ready);
        assert_eq!(
            ObservedPod::from_pod(&pod(None, None)).phase,
            PodPhase::Pending
        );
        assert_eq!(
            ObservedPod::from_pod(&pod(Some("Failed"), None)).phase,
            PodPhase::Failed
        );
        assert_eq!(
            ObservedPod::from_pod(&pod(Some("Weird"), None)).phase,
            PodPhase::Unknown
        );

        let mut deleting = pod(Some("Running"), Some("True"));
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(ObservedPod::from_pod(&deleting).terminating);
    }
}
