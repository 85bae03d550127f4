//! The Redis backplane against a local 3-master Redis Cluster: sharded pub/sub delivery on
//! channels owned by different masters, reference counting (PUBSUB SHARDNUMSUB), direct sends,
//! a registry spread over many slots, presence, and history.

mod common;

use std::collections::HashMap;

use common::*;
use wsfleet_gateway::backplane::{BackplaneConfig, Delivery, RedisMode};
use wsfleet_tests::redis::RedisCluster;

fn clustered(cluster: &RedisCluster, node: &str) -> BackplaneConfig {
    config(&cluster.urls().join(","), RedisMode::Cluster, "wsf", node)
}

fn live_topic(channel: &str) -> String {
    format!("wsf:{{ch:{channel}}}:live")
}

/// One channel name per master, so every shard carries traffic.
fn channels_on_each_master(cluster: &RedisCluster) -> Vec<(String, u16)> {
    let mut by_master: HashMap<u16, String> = HashMap::new();
    for i in 0..64 {
        let channel = format!("room-{i}");
        let master = cluster
            .master_for_key(&live_topic(&channel))
            .expect("slot owner");
        by_master.entry(master).or_insert(channel);
        if by_master.len() == 3 {
            break;
        }
    }
    assert_eq!(by_master.len(), 3, "found channels on all three masters");
    by_master
        .into_iter()
        .map(|(port, channel)| (channel, port))
        .collect()
}

fn shardnumsub(cluster: &RedisCluster, port: u16, topic: &str) -> i64 {
    let output = cluster
        .cli(port, &["PUBSUB", "SHARDNUMSUB", topic])
        .expect("redis-cli");
    last_number(&output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_channels_deliver_across_masters_with_history_and_refcounts() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let (a, _a_deliveries) = connect_up(clustered(&cluster, "a")).await;
    let (b, mut b_deliveries) = connect_up(clustered(&cluster, "b")).await;
    let channels = channels_on_each_master(&cluster);
    let mut b_state = b.state_watch();
    b_state.mark_unchanged();

    for (channel, _) in &channels {
        b.subscribe_channel(channel).await.expect("subscribe");
        b.subscribe_channel(channel)
            .await
            .expect("second subscriber");
    }
    for (channel, port) in &channels {
        assert_eq!(shardnumsub(&cluster, *port, &live_topic(channel)), 1);
    }

    // Three messages per channel; each channel's offsets grow 1..=3 in order.
    let mut epochs = HashMap::new();
    for round in 1..=3u64 {
        for (channel, _) in &channels {
            let position = a
                .publish(channel, &raw(&format!(r#"{{"round":{round}}}"#)))
                .await
                .expect("publish");
            assert_eq!(position.offset, round);
            epochs.insert(channel.clone(), position.epoch);
        }
    }
    let received = next_channel_messages(&mut b_deliveries, 9).await;
    for (channel, _) in &channels {
        let offsets: Vec<u64> = received
            .iter()
            .filter(|(c, ..)| c == channel)
            .map(|(_, offset, epoch, _)| {
                assert_eq!(**epoch, *epochs[channel]);
                *offset
            })
            .collect();
        assert_eq!(offsets, vec![1, 2, 3], "channel {channel}");
    }

    // History on every shard: since offset 1 → exactly offsets 2 and 3.
    for (channel, _) in &channels {
        let recovery = a
            .history(channel, 1, &epochs[channel])
            .await
            .expect("history");
        assert!(recovery.recovered);
        let offsets: Vec<u64> = recovery.messages.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![2, 3]);
        assert_eq!(&recovery.messages[1].1[..], br#"{"round":3}"#);
        let stale = a.history(channel, 1, "other").await.expect("history");
        assert!(!stale.recovered);
    }

    // Reference counts: the topic stays until the last local subscriber leaves.
    for (channel, port) in &channels {
        b.unsubscribe_channel(channel).await;
        assert_eq!(shardnumsub(&cluster, *port, &live_topic(channel)), 1);
        b.unsubscribe_channel(channel).await;
        assert_eq!(shardnumsub(&cluster, *port, &live_topic(channel)), 0);
    }
    // Give any stray confirmation time to be processed, then check b never went Down.
    b.subscribe_channel("after").await.expect("subscribe");
    assert!(
        !b_state.has_changed().unwrap_or(true),
        "b stayed Up throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_direct_sends_registry_and_presence() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let (a, mut a_deliveries) = connect_up(clustered(&cluster, "a")).await;
    let (b, mut b_deliveries) = connect_up(clustered(&cluster, "b")).await;

    // Enough clients to land on every master, so registry batches are split by slot.
    let ids: Vec<String> = (0..600).map(|i| format!("client-{i}")).collect();
    b.register_clients(&ids).await.expect("register");
    a.register_clients(&["zed".to_string()])
        .await
        .expect("register");
    for id in ["client-0", "client-299", "client-599"] {
        assert_eq!(
            a.client_node(id).await.expect("lookup").as_deref(),
            Some("b")
        );
    }

    assert!(
        a.send_direct("client-42", "zed", &raw(r#"{"ping":1}"#))
            .await
            .expect("send")
    );
    match next(&mut b_deliveries).await {
        Delivery::Direct { to, from, data } => {
            assert_eq!((to.as_str(), from.as_str()), ("client-42", "zed"));
            assert_eq!(&data[..], br#"{"ping":1}"#);
        }
        other => panic!("unexpected delivery {other:?}"),
    }
    assert!(
        b.send_direct("zed", "client-42", &raw(r#""pong""#))
            .await
            .expect("send")
    );
    match next(&mut a_deliveries).await {
        Delivery::Direct { to, data, .. } => {
            assert_eq!(to, "zed");
            assert_eq!(&data[..], br#""pong""#);
        }
        other => panic!("unexpected delivery {other:?}"),
    }
    assert!(
        !a.send_direct("nobody", "zed", &raw("1"))
            .await
            .expect("send")
    );

    b.unregister_client("client-42").await.expect("unregister");
    assert_eq!(a.client_node("client-42").await.expect("lookup"), None);

    b.set_presence(600, 1000, "serving")
        .await
        .expect("presence");
    let seen = a.presence("b").await.expect("read").expect("present");
    assert_eq!((seen.connections, seen.cap), (600, 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_subscriptions_come_back_after_their_connections_are_killed() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let (a, _a_deliveries) = connect_up(clustered(&cluster, "a")).await;
    let (b, mut b_deliveries) = connect_up(clustered(&cluster, "b")).await;
    let channels = channels_on_each_master(&cluster);
    for (channel, _) in &channels {
        b.subscribe_channel(channel).await.expect("subscribe");
    }
    // Many channels over many slots, so re-subscription sends many SSUBSCRIBE groups.
    let bulk: Vec<String> = (0..300).map(|i| format!("bulk-{i}")).collect();
    for channel in &bulk {
        b.subscribe_channel(channel).await.expect("subscribe");
    }

    let mut killed = 0;
    for port in cluster.ports() {
        let output = cluster
            .cli(*port, &["CLIENT", "KILL", "TYPE", "pubsub"])
            .expect("kill pubsub clients");
        killed += last_number(&output);
    }
    // The first kill already makes b rebuild its whole cluster link, so later kills may find
    // fresh connections or none; what matters is that subscriptions were cut and come back.
    assert!(killed >= 1, "subscription connections were killed");

    for (channel, port) in &channels {
        let topic = live_topic(channel);
        assert!(
            eventually(|| shardnumsub(&cluster, *port, &topic) == 1).await,
            "{channel} re-subscribed"
        );
    }
    assert!(b.wait_up(SOON).await);
    let sample = bulk.iter().step_by(30);
    for channel in channels.iter().map(|(c, _)| c).chain(sample) {
        let data = raw("1");
        let position = retry(|| a.publish(channel, &data)).await;
        let received = next_channel_messages(&mut b_deliveries, 1).await;
        assert_eq!((&received[0].0, received[0].1), (channel, position.offset));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_channel_follows_its_slot_to_another_master() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let (a, _a_deliveries) = connect_up(clustered(&cluster, "a")).await;
    let (b, mut b_deliveries) = connect_up(clustered(&cluster, "b")).await;
    let topic = live_topic("moving");
    let slot = cluster.key_slot(&topic).expect("slot");
    let from = cluster.master_for_slot(slot).expect("owner");
    let to = *cluster
        .ports()
        .iter()
        .find(|&&port| port != from)
        .expect("another master");

    b.subscribe_channel("moving").await.expect("subscribe");
    assert_eq!(shardnumsub(&cluster, from, &topic), 1);

    // Nothing was published yet, so the slot holds no keys and can move without MIGRATE.
    cluster.move_empty_slot(slot, to).expect("move slot");
    assert!(
        eventually(|| shardnumsub(&cluster, to, &topic) == 1).await,
        "b subscribed again on the new owner"
    );
    assert!(b.wait_up(SOON).await);
    let data = raw(r#""moved""#);
    let position = retry(|| a.publish("moving", &data)).await;
    let received = next_channel_messages(&mut b_deliveries, 1).await;
    assert_eq!(
        (received[0].1, received[0].3.as_str()),
        (position.offset, r#""moved""#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_master_is_noticed_even_when_it_does_not_hold_the_node_channel() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let (a, _a_deliveries) = connect_up(clustered(&cluster, "a")).await;
    let mut b_config = clustered(&cluster, "b");
    b_config.probe_timeout = std::time::Duration::from_secs(1);
    let (b, mut b_deliveries) = connect_up(b_config).await;
    let node_master = cluster.master_for_key("wsf:node:b").expect("owner");
    let (channel, stalled) = channels_on_each_master(&cluster)
        .into_iter()
        .find(|(_, port)| *port != node_master)
        .expect("a channel on another master");
    b.subscribe_channel(&channel).await.expect("subscribe");

    // Only one shard stalls; b's node channel lives on another one.
    cluster
        .cli(stalled, &["CLIENT", "PAUSE", "4000", "ALL"])
        .expect("pause");
    assert!(
        wait_state(&b, wsfleet_gateway::backplane::BackplaneState::Down).await,
        "the per-master probe noticed the stalled shard"
    );
    assert!(b.wait_up(SOON).await, "recovered after the pause");
    let data = raw("1");
    let position = retry(|| a.publish(&channel, &data)).await;
    let received = next_channel_messages(&mut b_deliveries, 1).await;
    assert_eq!((&received[0].0, received[0].1), (&channel, position.offset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_after_a_master_fails_over_to_its_replica() {
    let mut cluster = RedisCluster::start_with_replicas(1).expect("redis cluster");
    let (a, _a_deliveries) = connect_up(clustered(&cluster, "a")).await;
    let (b, mut b_deliveries) = connect_up(clustered(&cluster, "b")).await;
    let (channel, master) = channels_on_each_master(&cluster)
        .into_iter()
        .next()
        .expect("a channel");
    b.subscribe_channel(&channel).await.expect("subscribe");
    let before = a.publish(&channel, &raw("1")).await.expect("publish");
    let received = next_channel_messages(&mut b_deliveries, 1).await;
    assert_eq!(received[0].1, before.offset);

    cluster.kill_node(master);
    assert!(
        wait_state(&b, wsfleet_gateway::backplane::BackplaneState::Down).await,
        "b noticed its shard's master died"
    );
    cluster.wait_until_healthy().expect("replica promoted");
    let promoted = cluster
        .master_for_key(&live_topic(&channel))
        .expect("new owner");
    assert_ne!(promoted, master);
    assert!(b.wait_up(SOON).await, "b back up after the failover");
    assert!(a.wait_up(SOON).await, "a back up after the failover");

    let data = raw(r#""after failover""#);
    let after = retry(|| a.publish(&channel, &data)).await;
    // Nothing else was published, so the next delivery is exactly the new message (offset 2
    // if the replica had the first write, or offset 1 of a new epoch if replication lost it).
    let next = next_channel_messages(&mut b_deliveries, 1).await.remove(0);
    assert_eq!(
        (next.0, next.1, next.2, next.3.as_str()),
        (
            channel,
            after.offset,
            after.epoch.to_string(),
            r#""after failover""#
        )
    );
}
