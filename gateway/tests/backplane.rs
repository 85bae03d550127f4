//! The Redis backplane against a real standalone `redis-server`: channel fan-out between two
//! nodes, reference-counted topics, direct sends through the registry, presence, history and
//! recovery, and behaviour while Redis is killed, paused and restarted.

mod common;

use std::time::Duration;

use common::*;
use wsfleet_gateway::backplane::{BackplaneState, Delivery, RedisMode};
use wsfleet_tests::redis::RedisServer;

fn standalone(redis: &RedisServer, node: &str) -> wsfleet_gateway::backplane::BackplaneConfig {
    config(&redis.url(), RedisMode::Standalone, "wsf", node)
}

fn numsub(redis: &RedisServer, topic: &str) -> i64 {
    last_number(&redis.cli(&["PUBSUB", "NUMSUB", topic]).expect("redis-cli"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_messages_reach_the_other_node_with_growing_offsets() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, mut b_deliveries) = connect_up(standalone(&redis, "b")).await;

    b.subscribe_channel("news").await.expect("subscribe");
    let mut published = Vec::new();
    for i in 0..5 {
        let position = a
            .publish("news", &raw(&format!(r#"{{"n":{i}}}"#)))
            .await
            .expect("publish");
        published.push(position);
    }
    let offsets: Vec<u64> = published.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5]);

    let received = next_channel_messages(&mut b_deliveries, 5).await;
    for (i, (channel, offset, epoch, data)) in received.into_iter().enumerate() {
        assert_eq!(channel, "news");
        assert_eq!(offset, i as u64 + 1);
        assert_eq!(*epoch, *published[i].epoch);
        assert_eq!(data, format!(r#"{{"n":{i}}}"#));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_is_subscribed_only_while_the_node_has_local_subscribers() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, mut b_deliveries) = connect_up(standalone(&redis, "b")).await;
    let topic = "wsf:{ch:news}:live";
    let mut b_state = b.state_watch();
    b_state.mark_unchanged();

    b.subscribe_channel("news").await.expect("first subscriber");
    b.subscribe_channel("news")
        .await
        .expect("second subscriber");
    assert_eq!(numsub(&redis, topic), 1);

    b.unsubscribe_channel("news").await;
    assert_eq!(numsub(&redis, topic), 1, "one local subscriber remains");

    b.unsubscribe_channel("news").await;
    assert_eq!(
        numsub(&redis, topic),
        0,
        "last unsubscribe leaves the topic"
    );

    // Publish on the dropped channel, then on a still-subscribed one: the node's deliveries are
    // ordered, so if the first had been delivered it would arrive before the marker.
    b.subscribe_channel("marker")
        .await
        .expect("subscribe marker");
    a.publish("news", &raw("1")).await.expect("publish news");
    a.publish("marker", &raw("2"))
        .await
        .expect("publish marker");
    match next(&mut b_deliveries).await {
        Delivery::Channel { channel, .. } => assert_eq!(channel, "marker"),
        other => panic!("unexpected delivery {other:?}"),
    }
    // Our own unsubscribe confirmations must not look like Redis dropping a subscription,
    // even when the channel is subscribed again before the confirmation is read.
    for _ in 0..20 {
        b.unsubscribe_channel("marker").await;
        b.subscribe_channel("marker")
            .await
            .expect("subscribe again");
    }
    a.publish("marker", &raw("3"))
        .await
        .expect("publish marker");
    next_channel_messages(&mut b_deliveries, 1).await;
    assert!(
        !b_state.has_changed().unwrap_or(true),
        "b stayed Up throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_send_reaches_a_client_registered_on_the_other_node() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, mut b_deliveries) = connect_up(standalone(&redis, "b")).await;

    b.register_clients(&["alice".to_string()])
        .await
        .expect("register");
    assert_eq!(
        a.client_node("alice").await.expect("lookup").as_deref(),
        Some("b")
    );

    let found = a
        .send_direct("alice", "bob", &raw(r#"{"hi":true}"#))
        .await
        .expect("send");
    assert!(found);
    match next(&mut b_deliveries).await {
        Delivery::Direct { to, from, data } => {
            assert_eq!((to.as_str(), from.as_str()), ("alice", "bob"));
            assert_eq!(&data[..], br#"{"hi":true}"#);
        }
        other => panic!("unexpected delivery {other:?}"),
    }

    let missing = a
        .send_direct("nobody", "bob", &raw("1"))
        .await
        .expect("send");
    assert!(!missing, "an unregistered client is reported as not found");
}

/// A connect storm: every client's entry is written and each caller returns only once its
/// own entry is in Redis, however the registrations were batched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_are_each_written_before_they_return() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, _b_deliveries) = connect_up(standalone(&redis, "b")).await;
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let registrations = (0..1000).map(|i| {
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            let id = format!("storm-{i}");
            b.register_client(&id).await.expect("register");
            // Checked at once: the caller must not return before its own entry is written.
            a.client_node(&id).await.expect("lookup")
        })
    });
    for node in futures::future::join_all(registrations).await {
        assert_eq!(node.expect("task").as_deref(), Some("b"));
    }
    let keys = redis.cli(&[
        "EVAL",
        "return #redis.call('KEYS', 'wsf:client:storm-*')",
        "0",
    ]);
    assert_eq!(last_number(&keys.expect("cli")), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_entries_are_refreshed_and_unregistered() {
    let redis = RedisServer::start().expect("redis-server");
    let mut b_config = standalone(&redis, "b");
    b_config.registry_ttl = Duration::from_secs(3);
    b_config.registry_refresh = Duration::from_secs(3);
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, _b_deliveries) = connect_up(b_config).await;

    let ids: Vec<String> = (0..2500).map(|i| format!("client-{i}")).collect();
    b.register_clients(&ids).await.expect("register");
    let ttl = last_number(&redis.cli(&["PTTL", "wsf:client:client-7"]).expect("cli"));
    assert!(
        ttl > 3000 && ttl <= 9000,
        "an entry lives three rewrite intervals, got {ttl} ms"
    );

    // Past an entry's TTL, the entries still exist only because the node rewrote them.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for id in ["client-0", "client-1234", "client-2499"] {
        assert_eq!(
            a.client_node(id).await.expect("lookup").as_deref(),
            Some("b")
        );
    }

    b.unregister_client("client-0").await.expect("unregister");
    assert_eq!(a.client_node("client-0").await.expect("lookup"), None);

    // A node that no longer owns an entry must not delete it.
    a.unregister_client("client-1")
        .await
        .expect("foreign unregister");
    assert_eq!(
        a.client_node("client-1").await.expect("lookup").as_deref(),
        Some("b")
    );

    // An unregistered client stays gone after further refresh ticks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(a.client_node("client-0").await.expect("lookup"), None);
}

/// A node that dies without unregistering: its clients stop resolving within the registry
/// TTL (its liveness key expires) although their entries are still in Redis, and a new run of
/// a node with the same name does not inherit them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_clients_stop_resolving_within_the_registry_ttl() {
    let redis = RedisServer::start().expect("redis-server");
    let mut b_config = standalone(&redis, "b");
    b_config.registry_ttl = Duration::from_secs(3);
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, b_deliveries) = connect_up(b_config.clone()).await;
    b.register_clients(&["carol".to_string()])
        .await
        .expect("register");
    assert_eq!(
        a.client_node("carol").await.expect("lookup").as_deref(),
        Some("b")
    );

    // b dies: its tasks stop, nothing is unregistered.
    drop((b, b_deliveries));
    let died = tokio::time::Instant::now();
    while a.client_node("carol").await.expect("lookup").is_some() {
        assert!(
            died.elapsed() < Duration::from_secs(4),
            "carol still resolves {:?} after b died (registry TTL 3 s)",
            died.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_after = died.elapsed();
    assert_eq!(
        last_number(&redis.cli(&["EXISTS", "wsf:client:carol"]).expect("cli")),
        1,
        "the entry itself is still there"
    );
    assert!(
        !a.send_direct("carol", "x", &raw("1")).await.expect("send"),
        "a send to her is reported as not found"
    );

    // b comes back (a restarted container, same node name): carol is not its client.
    let (b, _b_deliveries) = connect_up(b_config).await;
    b.register_clients(&["dave".to_string()])
        .await
        .expect("register");
    assert_eq!(
        a.client_node("dave").await.expect("lookup").as_deref(),
        Some("b")
    );
    assert_eq!(a.client_node("carol").await.expect("lookup"), None);
    eprintln!("a dead node's client stopped resolving {gone_after:?} after it died (TTL 3 s)");
}

/// Redis commands per idle connection per second, over 10 s with 2,000 idle clients
/// registered on one node and a second node beside it (their liveness, presence and probes
/// included): at most 0.01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_redis_at_most_a_hundredth_of_an_operation_per_second() {
    let redis = RedisServer::start().expect("redis-server");
    let fast = |node: &str| {
        let mut config = standalone(&redis, node);
        config.registry_ttl = Duration::from_secs(3);
        config
    };
    let (_a, _a_deliveries) = connect_up(fast("a")).await;
    let (b, _b_deliveries) = connect_up(fast("b")).await;
    let idle = 2000;
    let ids: Vec<String> = (0..idle).map(|i| format!("idle-{i}")).collect();
    b.register_clients(&ids).await.expect("register");
    b.set_presence(idle, 100_000, "serving")
        .await
        .expect("presence");
    // Past the first full rewrite, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = || -> u64 {
        let info = redis.cli(&["INFO", "commandstats"]).expect("cli");
        info.lines()
            .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info"))
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let before = calls();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let commands = calls() - before;
    let per_connection_second = commands as f64 / (idle as f64 * window.as_secs_f64());
    eprintln!(
        "{commands} Redis commands in {window:?} with {idle} idle connections: \
         {per_connection_second:.5} per connection per second"
    );
    assert!(
        per_connection_second <= 0.01,
        "{per_connection_second} commands per idle connection per second"
    );
    for id in ["idle-0", "idle-1999"] {
        assert_eq!(
            b.client_node(id).await.expect("lookup").as_deref(),
            Some("b"),
            "still registered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_visible_to_other_nodes_and_expires() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, _b_deliveries) = connect_up(standalone(&redis, "b")).await;

    a.set_presence(12, 100, "serving").await.expect("presence");
    let seen = b.presence("a").await.expect("read").expect("present");
    assert_eq!((seen.connections, seen.cap), (12, 100));
    assert_eq!(seen.state, "serving");
    assert!(seen.heartbeat_unix_ms > 0);
    let ttl = last_number(&redis.cli(&["PTTL", "wsf:presence:a"]).expect("cli"));
    assert!(ttl > 0, "presence has a TTL, got {ttl}");
    assert_eq!(b.presence("ghost").await.expect("read"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_returns_exactly_the_missed_messages() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;

    let mut epoch = String::new();
    for i in 1..=10 {
        epoch = a
            .publish("feed", &raw(&format!("{i}")))
            .await
            .expect("publish")
            .epoch
            .to_string();
    }

    let recovery = a.history("feed", 4, &epoch).await.expect("history");
    assert!(recovery.recovered);
    assert_eq!(recovery.position.offset, 10);
    let got: Vec<(u64, String)> = recovery
        .messages
        .iter()
        .map(|(offset, data)| (*offset, String::from_utf8_lossy(data).into_owned()))
        .collect();
    let want: Vec<(u64, String)> = (5..=10).map(|i| (i, i.to_string())).collect();
    assert_eq!(got, want);

    let up_to_date = a.history("feed", 10, &epoch).await.expect("history");
    assert!(up_to_date.recovered && up_to_date.messages.is_empty());

    let other_epoch = a.history("feed", 4, "stale-epoch").await.expect("history");
    assert!(!other_epoch.recovered);

    let from_future = a.history("feed", 11, &epoch).await.expect("history");
    assert!(!from_future.recovered);

    let position = a.position("feed").await.expect("position");
    assert_eq!((position.offset, &*position.epoch), (10, epoch.as_str()));

    let never = a.history("silent", 0, "").await.expect("history");
    assert!(never.recovered && never.messages.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_by_length_and_age() {
    let redis = RedisServer::start().expect("redis-server");
    let mut config = standalone(&redis, "a");
    config.history_max_len = 20;
    config.history_max_age = Duration::from_secs(1);
    let (a, _a_deliveries) = connect_up(config).await;

    let mut epoch = String::new();
    for i in 1..=500 {
        epoch = a
            .publish("busy", &raw(&i.to_string()))
            .await
            .expect("publish")
            .epoch
            .to_string();
    }
    let len = last_number(&redis.cli(&["XLEN", "wsf:{ch:busy}:hist"]).expect("cli"));
    // MAXLEN ~ trims whole Stream nodes (100 entries by default), so the bound is approximate.
    assert!((20..=120).contains(&len), "history length {len}");
    let gap = a.history("busy", 0, &epoch).await.expect("history");
    assert!(
        !gap.recovered,
        "trimmed history cannot recover from offset 0"
    );
    let recent = a.history("busy", 490, &epoch).await.expect("history");
    assert!(recent.recovered);
    assert_eq!(recent.messages.len(), 10);

    // Age: after the bound passes, the next publish trims everything older.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.publish("busy", &raw("501")).await.expect("publish");
    let len = last_number(&redis.cli(&["XLEN", "wsf:{ch:busy}:hist"]).expect("cli"));
    assert_eq!(len, 1, "entries past the age bound are trimmed on write");
    let aged = a.history("busy", 499, &epoch).await.expect("history");
    assert!(!aged.recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_changes_when_redis_restarts_without_persistence() {
    let mut redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;

    let mut before = None;
    for i in 1..=3 {
        before = Some(
            a.publish("feed", &raw(&i.to_string()))
                .await
                .expect("publish"),
        );
    }
    let before = before.expect("published");

    redis.restart().expect("restart");
    let data = raw("4");
    let after = retry(|| a.publish("feed", &data)).await;
    assert_eq!(after.offset, 1, "the sequence restarted with the lost data");
    assert_ne!(
        after.epoch, before.epoch,
        "a new epoch marks the lost history"
    );

    let recovery = a.history("feed", 3, &before.epoch).await.expect("history");
    assert!(!recovery.recovered);
    assert_eq!(recovery.position.epoch, after.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_after_redis_is_killed_and_restarted() {
    let mut redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let mut b_config = standalone(&redis, "b");
    b_config.registry_ttl = Duration::from_secs(6);
    let (b, mut b_deliveries) = connect_up(b_config).await;
    b.subscribe_channel("news").await.expect("subscribe");
    b.register_clients(&["alice".to_string()])
        .await
        .expect("register");

    redis.kill();
    assert!(wait_state(&a, BackplaneState::Down).await, "a noticed");
    assert!(wait_state(&b, BackplaneState::Down).await, "b noticed");
    assert!(a.publish("news", &raw("0")).await.is_err());

    redis.restart().expect("restart");
    assert!(wait_state(&a, BackplaneState::Up).await, "a recovered");
    assert!(wait_state(&b, BackplaneState::Up).await, "b recovered");
    assert_eq!(numsub(&redis, "wsf:{ch:news}:live"), 1, "b re-subscribed");

    let data = raw(r#""after""#);
    let position = retry(|| a.publish("news", &data)).await;
    let received = next_channel_messages(&mut b_deliveries, 1).await;
    assert_eq!(received[0].1, position.offset);
    assert_eq!(received[0].3, r#""after""#);

    // The registry comes back with the next refresh, so direct sends work again.
    assert!(
        eventually_async(|| async {
            let data = raw("1");
            a.send_direct("alice", "x", &data).await.unwrap_or(false)
        })
        .await,
        "registry entry rewritten after data loss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_fails_the_probe_and_the_node_recovers() {
    let redis = RedisServer::start().expect("redis-server");
    let mut config = standalone(&redis, "a");
    config.probe_timeout = Duration::from_secs(1);
    let (a, _a_deliveries) = connect_up(config).await;
    let (b, mut b_deliveries) = connect_up(standalone(&redis, "b")).await;
    b.subscribe_channel("news").await.expect("subscribe");

    // Connections stay open but nothing is served: only the probe can notice.
    redis
        .cli(&["CLIENT", "PAUSE", "4000", "ALL"])
        .expect("pause");
    assert!(
        wait_state(&a, BackplaneState::Down).await,
        "probe noticed the stall"
    );
    assert!(
        wait_state(&a, BackplaneState::Up).await,
        "recovered after the pause"
    );

    let data = raw("1");
    let position = retry(|| a.publish("news", &data)).await;
    let received = next_channel_messages(&mut b_deliveries, 1).await;
    assert_eq!(received[0].1, position.offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_connection_is_re_established() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, mut b_deliveries) = connect_up(standalone(&redis, "b")).await;
    b.subscribe_channel("news").await.expect("subscribe");

    let killed = redis
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("kill pubsub clients");
    assert_eq!(
        last_number(&killed),
        2,
        "both subscription connections killed"
    );
    assert!(wait_state(&b, BackplaneState::Up).await);
    assert!(
        eventually(|| numsub(&redis, "wsf:{ch:news}:live") == 1).await,
        "subscription restored"
    );
    let data = raw("1");
    let position = retry(|| a.publish("news", &data)).await;
    let received = next_channel_messages(&mut b_deliveries, 1).await;
    assert_eq!(received[0].1, position.offset);
}

async fn eventually_async<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + SOON;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_missed_while_the_subscription_was_down_are_caught_up_from_history() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, mut b_deliveries) = connect_up(standalone(&redis, "b")).await;
    b.subscribe_channel("feed").await.expect("subscribe");
    for i in 1..=3 {
        a.publish("feed", &raw(&i.to_string()))
            .await
            .expect("publish");
    }
    let early = next_channel_messages(&mut b_deliveries, 3).await;
    assert_eq!(early.iter().map(|m| m.1).collect::<Vec<_>>(), vec![1, 2, 3]);

    // Cut every subscription connection and keep new connections out (the command
    // connections stay open), so publishes land only in history.
    let mut admin = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let set_maxclients = |n: u32| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg(n)
            .clone()
    };
    set_maxclients(3)
        .query_async::<()>(&mut admin)
        .await
        .expect("limit clients");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .expect("kill subscriptions");
    assert_eq!(killed, 2);
    assert!(wait_state(&b, BackplaneState::Down).await);
    for i in 4..=10 {
        a.publish("feed", &raw(&i.to_string()))
            .await
            .expect("publish while b is cut off");
    }

    set_maxclients(10_000)
        .query_async::<()>(&mut admin)
        .await
        .expect("lift limit");
    assert!(wait_state(&b, BackplaneState::Up).await);

    // Nothing new is published: the missed messages come from the catch-up on reconnect.
    let missed = next_channel_messages(&mut b_deliveries, 7).await;
    let offsets: Vec<u64> = missed.iter().map(|m| m.1).collect();
    assert_eq!(offsets, (4..=10).collect::<Vec<_>>(), "in order, once each");
    let data: Vec<&str> = missed.iter().map(|m| m.3.as_str()).collect();
    assert_eq!(data, vec!["4", "5", "6", "7", "8", "9", "10"]);

    a.publish("feed", &raw("11")).await.expect("publish");
    let live = next_channel_messages(&mut b_deliveries, 1).await;
    assert_eq!(live[0].1, 11);
    let stats = b.stats();
    assert_eq!(stats.caught_up_messages, 7);
    assert!(
        stats.links_lost >= 1 && stats.links_established >= 2,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_data_loss_the_new_epoch_is_caught_up_from_its_start() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, mut b_deliveries) = connect_up(standalone(&redis, "b")).await;
    b.subscribe_channel("feed").await.expect("subscribe");
    for i in 1..=3 {
        a.publish("feed", &raw(&i.to_string()))
            .await
            .expect("publish");
    }
    let old = next_channel_messages(&mut b_deliveries, 3).await;

    // b's subscription is cut and kept out while Redis loses everything and a new epoch
    // begins with two messages.
    let mut admin = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let set_maxclients = |n: u32| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg(n)
            .clone()
    };
    set_maxclients(3)
        .query_async::<()>(&mut admin)
        .await
        .expect("limit");
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async::<i64>(&mut admin)
        .await
        .expect("kill subscriptions");
    assert!(wait_state(&b, BackplaneState::Down).await);
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut admin)
        .await
        .expect("lose data");
    let mut new_epoch = String::new();
    for i in 1..=2 {
        let position = a
            .publish("feed", &raw(&format!(r#""new-{i}""#)))
            .await
            .expect("publish");
        new_epoch = position.epoch.to_string();
    }
    assert_ne!(new_epoch, old[0].2);
    set_maxclients(10_000)
        .query_async::<()>(&mut admin)
        .await
        .expect("lift");
    assert!(wait_state(&b, BackplaneState::Up).await);
    a.publish("feed", &raw(r#""new-3""#))
        .await
        .expect("publish");

    let new = next_channel_messages(&mut b_deliveries, 3).await;
    let seen: Vec<(u64, &str, &str)> = new
        .iter()
        .map(|(_, offset, epoch, data)| (*offset, epoch.as_str(), data.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, new_epoch.as_str(), r#""new-1""#),
            (2, new_epoch.as_str(), r#""new-2""#),
            (3, new_epoch.as_str(), r#""new-3""#),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_redis_comes_up_when_redis_does() {
    let mut redis = RedisServer::start().expect("redis-server");
    redis.kill();
    let (a, _a_deliveries) =
        wsfleet_gateway::backplane::Backplane::connect(standalone(&redis, "a")).expect("config");
    assert_eq!(a.state(), BackplaneState::Down);
    let failed = tokio::time::timeout(SOON, a.publish("news", &raw("1"))).await;
    assert!(
        matches!(failed, Ok(Err(_))),
        "publish fails promptly without Redis"
    );

    redis.restart().expect("start redis");
    assert!(wait_state(&a, BackplaneState::Up).await);
    let data = raw("1");
    let position = retry(|| a.publish("news", &data)).await;
    assert_eq!(position.offset, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_is_a_clear_error() {
    let bad_url = config("not a url", RedisMode::Standalone, "wsf", "a");
    let Err(error) = wsfleet_gateway::backplane::Backplane::connect(bad_url) else {
        panic!("an unparsable url must be rejected");
    };
    assert!(
        error
            .to_string()
            .contains("invalid backplane configuration"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_on_backplane_topics_are_dropped_and_counted() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, _a_deliveries) = connect_up(standalone(&redis, "a")).await;
    let (b, mut b_deliveries) = connect_up(standalone(&redis, "b")).await;
    b.subscribe_channel("news").await.expect("subscribe");

    // Foreign writers on our topics: not JSON, wrong shapes, unknown node message types.
    for (topic, payload) in [
        ("wsf:{ch:news}:live", "not json"),
        (
            "wsf:{ch:news}:live",
            r#"{"offset":"x","epoch":"e","data":1}"#,
        ),
        ("wsf:{ch:news}:live", r#"{"offset":1,"epoch":"e"}"#),
        ("wsf:node:b", r#"{"type":"direct","to":"x"}"#),
        ("wsf:node:b", r#"{"type":"surprise"}"#),
        ("wsf:node:b", "[1,2"),
    ] {
        redis
            .cli(&["PUBLISH", topic, payload])
            .expect("publish garbage");
    }
    let position = a.publish("news", &raw(r#""fine""#)).await.expect("publish");
    let received = next_channel_messages(&mut b_deliveries, 1).await;
    assert_eq!(
        (received[0].1, received[0].3.as_str()),
        (position.offset, r#""fine""#)
    );
    assert_eq!(b.stats().malformed_messages, 6);
    assert_eq!(b.state(), BackplaneState::Up);
    assert!(b.stats().last_probe_rtt > std::time::Duration::ZERO);
}
