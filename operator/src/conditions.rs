//! The fleet's metav1-style conditions: `Ready`, `Progressing`, `Degraded`, `AtCapacity`, and
//! `Monitored` while a PodMonitor is asked for. Setting a condition
//! keeps its `lastTransitionTime` unless its status actually changes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// The fleet is at `maxReplicas` and its nodes are near their connection caps.
pub const AT_CAPACITY: &str = "AtCapacity";
/// The fleet asks for a PodMonitor: True once applied, False when the cluster has no
/// PodMonitor API. Absent while `monitoring.podMonitor.enabled` is false.
pub const MONITORED: &str = "Monitored";

/// A condition to set: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Builds the new condition list from the previous one.
pub fn merge(
    previous: &[Condition],
    wanted: Vec<Wanted>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .into_iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason.to_string(),
                message: w.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of `type_` in `conditions`.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: bool) -> Wanted {
        Wanted {
            type_: READY,
            status,
            reason: "R",
            message: "m".into(),
        }
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0 = Timestamp::UNIX_EPOCH;
        let t1 = Timestamp::from_second(100).expect("valid time");
        let first = merge(&[], vec![ready(true)], Some(1), t0);
        assert_eq!(first[0].last_transition_time, Time(t0));
        let same = merge(&first, vec![ready(true)], Some(2), t1);
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, vec![ready(false)], Some(2), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(flipped[0].status, "False");
    }
}
