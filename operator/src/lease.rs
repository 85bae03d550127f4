//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas can run and
//! only one reconciles. kube 4.2 has no helper for this, so the protocol is here, small:
//!
//! - no Lease → create it holding it;
//! - held by us → renew (`renewTime = now`);
//! - held by another whose `renewTime + leaseDurationSeconds` has passed, or by nobody → take it
//!   over (`leaseTransitions + 1`);
//! - otherwise wait.
//!
//! Every write carries the `resourceVersion` that was read, so two candidates racing for an
//! expired lease cannot both win: the loser gets a 409 and stays a follower.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use crate::act::status_code;

/// Who competes for which lease, and for how long a lease holds without renewal.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub duration: Duration,
}

/// What to do with the lease as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nobody has the lease object yet: create it.
    Create(LeaseSpec),
    /// Write this spec (a renewal or a takeover) over the version read.
    Update(LeaseSpec),
    /// Someone else holds a live lease.
    Follow { holder: String },
}

/// The pure election rule.
pub fn next_step(current: Option<&LeaseSpec>, config: &LeaseConfig, now: Timestamp) -> Step {
    let duration_seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let mine = |acquired: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(current) = current else {
        return Step::Create(mine(None, 0));
    };
    let holder = current.holder_identity.clone().unwrap_or_default();
    let transitions = current.lease_transitions.unwrap_or(0);
    if holder == config.identity {
        return Step::Update(mine(current.acquire_time.clone(), transitions));
    }
    if holder.is_empty() || expired(current, now) {
        return Step::Update(mine(None, transitions.saturating_add(1)));
    }
    Step::Follow { holder }
}

/// Whether the holder failed to renew within its own lease duration.
fn expired(lease: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = lease.renew_time.as_ref() else {
        return true;
    };
    let seconds = i64::from(lease.lease_duration_seconds.unwrap_or(0).max(0));
    match renewed.0.checked_add(SignedDuration::from_secs(seconds)) {
        Ok(deadline) => deadline < now,
        Err(_) => false,
    }
}

/// Competes for the lease through the API.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Who competes, for which lease.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One election round at `now`: `Ok(true)` while this replica leads.
    pub async fn try_lead(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.config.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        match next_step(spec, &self.config, now) {
            Step::Follow { .. } => Ok(false),
            Step::Create(spec) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                lost_race_is_follow(self.api.create(&PostParams::default(), &lease).await)
            }
            Step::Update(spec) => {
                let Some(mut lease) = current else {
                    return Ok(false);
                };
                lease.spec = Some(spec);
                lost_race_is_follow(
                    self.api
                        .replace(&self.config.name, &PostParams::default(), &lease)
                        .await,
                )
            }
        }
    }

    /// Gives the lease up (on shutdown) so a standby takes over at once rather than after
    /// the lease expires. Only clears a lease this replica holds.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lost_race_is_follow(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )
        .map(|_| ())
    }
}

/// A write that lost to a concurrent one (409) means another replica acted first.
fn lost_race_is_follow(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if status_code(&e) == Some(409) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(identity: &str) -> LeaseConfig {
        LeaseConfig {
            name: "wsfleet-operator".into(),
            namespace: "ops".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid time")
    }

    fn held_by(holder: &str, renewed: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(0))),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn table() {
        let a = config("a");
        let cases: Vec<(&str, Option<LeaseSpec>, i64, &str)> = vec![
            ("no lease: create", None, 0, "create"),
            ("ours: renew", Some(held_by("a", 0, 2)), 10, "update"),
            (
                "theirs and live: follow",
                Some(held_by("b", 0, 2)),
                15,
                "follow",
            ),
            (
                "theirs and expired: take over",
                Some(held_by("b", 0, 2)),
                16,
                "update",
            ),
            (
                "released: take over",
                Some(LeaseSpec {
                    holder_identity: None,
                    ..held_by("b", 0, 2)
                }),
                1,
                "update",
            ),
        ];
        for (name, lease, now, want) in cases {
            let step = next_step(lease.as_ref(), &a, at(now));
            let got = match &step {
                Step::Create(_) => "create",
                Step::Update(_) => "update",
                Step::Follow { .. } => "follow",
            };
            assert_eq!(got, want, "{name}: {step:?}");
            if let Step::Create(spec) | Step::Update(spec) = step {
                assert_eq!(spec.holder_identity.as_deref(), Some("a"), "{name}");
                assert_eq!(spec.renew_time, Some(MicroTime(at(now))), "{name}");
            }
        }
    }

    #[test]
    fn renewal_keeps_acquire_time_and_takeover_counts_a_transition() {
        let a = config("a");
        let Step::Update(renewed) = next_step(Some(&held_by("a", 0, 2)), &a, at(5)) else {
            panic!("expected renewal");
        };
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.lease_transitions, Some(2));
        let Step::Update(taken) = next_step(Some(&held_by("b", 0, 2)), &a, at(30)) else {
            panic!("expected takeover");
        };
        assert_eq!(taken.acquire_time, Some(MicroTime(at(30))));
        assert_eq!(taken.lease_transitions, Some(3));
    }
}
