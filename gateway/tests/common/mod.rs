//! Helpers shared by the backplane integration tests: configurations with fast probes, waiting
//! for deliveries with deadlines, and raw JSON values.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::{Instant, timeout};
use wsfleet_gateway::backplane::{
    Backplane, BackplaneConfig, BackplaneState, Deliveries, Delivery, RedisMode,
};

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
pub const SOON: Duration = Duration::from_secs(20);

pub fn config(url: &str, mode: RedisMode, prefix: &str, node: &str) -> BackplaneConfig {
    let mut config = BackplaneConfig::new(url, mode, prefix, node);
    config.probe_interval = Duration::from_millis(200);
    config.probe_timeout = Duration::from_secs(2);
    config
}

/// Connects and waits until the backplane is Up.
pub async fn connect_up(config: BackplaneConfig) -> (Backplane, Deliveries) {
    let (backplane, deliveries) = Backplane::connect(config).expect("valid config");
    assert!(backplane.wait_up(SOON).await, "backplane did not come up");
    (backplane, deliveries)
}

pub fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).expect("test JSON is valid")
}

/// The next delivery, or a panic after `SOON`.
pub async fn next(deliveries: &mut Deliveries) -> Delivery {
    timeout(SOON, deliveries.recv())
        .await
        .expect("no delivery in time")
        .expect("delivery channel closed")
}

/// The next `count` channel deliveries as (channel, offset, epoch, data).
pub async fn next_channel_messages(
    deliveries: &mut Deliveries,
    count: usize,
) -> Vec<(String, u64, String, String)> {
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        match next(deliveries).await {
            Delivery::Channel {
                channel,
                offset,
                epoch,
                data,
            } => messages.push((
                channel,
                offset,
                epoch,
                String::from_utf8(data.to_vec()).expect("utf-8 data"),
            )),
            other => panic!("expected a channel message, got {other:?}"),
        }
    }
    messages
}

/// Polls `state` until it equals `wanted`, at most `SOON`.
pub async fn wait_state(backplane: &Backplane, wanted: BackplaneState) -> bool {
    let mut watch = backplane.state_watch();
    timeout(SOON, watch.wait_for(|state| *state == wanted))
        .await
        .is_ok_and(|result| result.is_ok())
}

/// Retries an operation that fails while Redis is coming back, until it succeeds or `SOON`
/// passes.
pub async fn retry<T, E: std::fmt::Debug, F, Fut>(mut operation: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + SOON;
    loop {
        match operation().await {
            Ok(value) => return value,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("operation kept failing: {error:?}"),
        }
    }
}

/// The last line of a `redis-cli` answer as a number (e.g. the count of `PUBSUB NUMSUB x`).
pub fn last_number(output: &str) -> i64 {
    output
        .lines()
        .rfind(|line| !line.trim().is_empty())
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number in {output:?}"))
}

/// Polls until `check` holds, at most `SOON`.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + SOON;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}
