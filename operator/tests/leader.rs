//! Leader election between two operator replicas against the in-process fake API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use kube_fake_client::ClientBuilder;
use tokio::sync::oneshot;
use wsfleet_operator::leadership::lead_while_elected;
use wsfleet_operator::lease::{Elector, LeaseConfig};
use wsfleet_operator::metrics::Metrics;

fn elector(client: &kube::Client, identity: &str) -> Elector {
    Elector::new(
        client.clone(),
        LeaseConfig {
            name: "wsfleet-operator".into(),
            namespace: "ops".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
        },
    )
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).expect("valid time")
}

#[tokio::test]
async fn one_leader_at_a_time_with_takeover_and_release() {
    let client = ClientBuilder::new().build().await.expect("fake client");
    let (a, b) = (elector(&client, "a"), elector(&client, "b"));

    assert!(
        a.try_lead(at(0)).await.expect("a round"),
        "first candidate leads"
    );
    assert!(!b.try_lead(at(1)).await.expect("b round"), "second follows");
    assert!(a.try_lead(at(10)).await.expect("a renews"));
    assert!(
        !b.try_lead(at(20)).await.expect("b round"),
        "renewed lease still live"
    );

    // a stops renewing; after its lease duration b takes over and a must follow.
    assert!(b.try_lead(at(26)).await.expect("b takes over"));
    assert!(!a.try_lead(at(27)).await.expect("a round"));

    // b shuts down cleanly; a leads at once instead of waiting for expiry.
    b.release().await.expect("release");
    assert!(a.try_lead(at(28)).await.expect("a after release"));
    assert!(!b.try_lead(at(29)).await.expect("b round"));
}

/// Marks a replica's controller task alive from start until it is dropped (aborted).
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Runs one replica's election loop; returns its "controller running" flag, its shutdown
/// trigger and the loop's handle.
fn replica(
    client: &kube::Client,
    identity: &str,
) -> (
    Arc<AtomicBool>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let elector = Elector::new(
        client.clone(),
        LeaseConfig {
            name: "wsfleet-operator".into(),
            namespace: "ops".into(),
            identity: identity.into(),
            duration: Duration::from_secs(3),
        },
    );
    let running = Arc::new(AtomicBool::new(false));
    let flag = running.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let metrics = Metrics::new().expect("metrics");
    let handle = tokio::spawn(lead_while_elected(
        elector,
        metrics,
        async move {
            let _ = stopped.await;
        },
        move || {
            let flag = flag.clone();
            async move {
                flag.store(true, Ordering::SeqCst);
                let _alive = Alive(flag);
                std::future::pending::<()>().await;
            }
        },
    ));
    (running, stop, handle)
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn only_the_leader_runs_the_controller_and_hands_over_on_shutdown() {
    let client = ClientBuilder::new().build().await.expect("fake client");
    let (a_running, a_stop, a_loop) = replica(&client, "a");
    eventually("a leads", || a_running.load(Ordering::SeqCst)).await;

    let (b_running, b_stop, b_loop) = replica(&client, "b");
    // Several election rounds (one per second) pass while a renews.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !b_running.load(Ordering::SeqCst),
        "b must not run while a leads"
    );

    a_stop.send(()).expect("a is running");
    tokio::time::timeout(Duration::from_secs(20), a_loop)
        .await
        .expect("a stops")
        .expect("a's loop did not panic");
    assert!(
        !a_running.load(Ordering::SeqCst),
        "a's controller is stopped"
    );
    eventually("b takes over after a releases", || {
        b_running.load(Ordering::SeqCst)
    })
    .await;

    b_stop.send(()).expect("b is running");
    tokio::time::timeout(Duration::from_secs(20), b_loop)
        .await
        .expect("b stops")
        .expect("b's loop did not panic");
}
