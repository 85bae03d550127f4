//! The test kit's own checks: real processes come up, go down and come back.

use std::time::Duration;
use wsfleet_tests::redis::RedisServer;
use wsfleet_tests::wait_until;

fn answers(redis: &RedisServer) -> bool {
    redis
        .cli(&["PING"])
        .is_ok_and(|reply| reply.trim() == "PONG")
}

#[test]
fn redis_can_be_killed_and_restarted_on_its_port() {
    let mut redis = RedisServer::start().expect("starting redis-server");
    let port = redis.port();
    assert!(answers(&redis));
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    redis.kill();
    assert!(wait_until(Duration::from_secs(10), || !answers(&redis)));
    redis.restart().expect("restarting redis-server");
    assert!(answers(&redis));
    assert_eq!(redis.port(), port, "restarted on the same port");
}
