//! The test kit's own checks: real processes come up, go down and come back.

use std::time::Duration;
use wsfleet_tests::{Redis, redis_ping, wait_until};

#[test]
fn redis_can_be_killed_and_restarted_on_its_port() {
    let mut redis = Redis::start();
    let port = redis.port;
    assert!(redis_ping(port));
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    redis.kill();
    assert!(wait_until(Duration::from_secs(10), || !redis_ping(port)));
    redis.restart();
    assert!(redis_ping(port));
    drop(redis);
    assert!(wait_until(Duration::from_secs(10), || !redis_ping(port)));
}
