//! What the operator sees of a fleet: its gateway pods, reduced to the facts decisions need.
//! Listing is by the fleet's selector labels; the conversion from a `Pod` is pure and tested.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use crate::crd::WebSocketFleet;
use crate::resources::pod::CONFIG_VOLUME;
use crate::resources::{REVISION_LABEL, config_map_prefix, selector_string};

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
        }
    }
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

/// Whether `fleet` is the controller of `object`. Labels alone could match someone else's
/// objects; the controller owner reference cannot.
pub fn controlled_by(object: &impl Resource, fleet: &WebSocketFleet) -> bool {
    let Some(uid) = fleet.meta().uid.as_deref() else {
        return false;
    };
    object.meta().owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.controller == Some(true) && r.uid == uid)
    })
}

/// The fleet's gateway pods, sorted by name.
pub async fn pods(api: &Api<Pod>, fleet: &WebSocketFleet) -> Result<Vec<ObservedPod>, kube::Error> {
    let list = api
        .list(&ListParams::default().labels(&selector_string(fleet)))
        .await?;
    let mut pods: Vec<ObservedPod> = list
        .items
        .iter()
        .filter(|pod| controlled_by(*pod, fleet))
        .map(ObservedPod::from_pod)
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}

/// Names of the fleet's gateway ConfigMaps (one per config version still around): those it
/// controls whose name has the config prefix.
pub async fn config_maps(
    api: &Api<ConfigMap>,
    fleet: &WebSocketFleet,
) -> Result<Vec<String>, kube::Error> {
    let list = api
        .list(&ListParams::default().labels(&selector_string(fleet)))
        .await?;
    let prefix = config_map_prefix(fleet);
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter(|cm| controlled_by(*cm, fleet) && cm.name_any().starts_with(&prefix))
        .map(|cm| cm.name_any())
        .collect();
    names.sort();
    Ok(names)
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
    fn only_objects_the_fleet_controls_are_its_own() {
        let mut fleet = crate::resources::testing::minimal();
        let mut mine = pod(Some("Running"), None);
        mine.metadata.owner_references = crate::resources::owner_reference(&fleet).map(|r| vec![r]);
        assert!(controlled_by(&mine, &fleet));
        let lookalike = pod(Some("Running"), None);
        assert!(
            !controlled_by(&lookalike, &fleet),
            "labels alone do not make it ours"
        );
        fleet.metadata.uid = Some("other".into());
        assert!(!controlled_by(&mine, &fleet));
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
