//! Leader election between two operator replicas against the in-process fake API.

use std::time::Duration;

use jiff::Timestamp;
use kube_fake_client::ClientBuilder;
use wsfleet_operator::lease::{Elector, LeaseConfig};

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
