//! Channel history with the in-process engine: a subscriber that missed messages resumes with
//! `since` and gets them once, in order, followed by live ones; history bounds are honoured.

mod support;

use serde_json::json;
use support::{Client, admin_publish, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_missed_messages_once_in_order() {
    let solo = node("solo", "", "standalone", &[]);
    support::resume_after_missed_messages(&solo, &solo, &solo, "resume:mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_beyond_the_history_bound_is_not_recovered() {
    let solo = node("solo", "", "standalone", &["--history-max-messages", "4"]);
    let mut epoch = String::new();
    for seq in 1..=10 {
        epoch = admin_publish(&solo, "short", json!({"seq": seq}))["epoch"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    let mut client = Client::connect(&solo).await;
    // Offsets 7..=10 are retained: resuming after 6 works, after 5 does not.
    let ack = client.subscribe("short", Some((6, &epoch))).await;
    assert_eq!(
        (ack["recovered"].clone(), ack["offset"].clone()),
        (json!(true), json!(10))
    );
    assert_eq!(
        client.messages("short", 4).await,
        support::expected(7, 7, 4)
    );
    let mut other = Client::connect(&solo).await;
    let ack = other.subscribe("short", Some((5, &epoch))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resumes_during_publishing_are_exactly_once_in_order() {
    let solo = node("solo", "", "standalone", &[]);
    support::concurrent_resumes(&solo, &solo, "busy").await;
}
