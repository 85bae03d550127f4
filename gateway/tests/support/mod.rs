//! Shared by the fleet tests: gateway processes on a Redis backplane (or the in-process
//! engine) and a minimal raw WebSocket client that reads JSON frames with deadlines.

#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsfleet_tests::{Gateway, wait_until};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const BIN: &str = env!("CARGO_BIN_EXE_wsfleet-gateway");
/// Opens `/drain` on every node these tests start.
pub const DRAIN_TOKEN: &str = "fleet-drain-token";
/// Opens the publish API on every node these tests start.
pub const PUBLISH_TOKEN: &str = "fleet-publish-token";
/// Generous: the machine may be loaded by parallel builds.
pub const WAIT: Duration = Duration::from_secs(30);

/// Starts an anonymous node named `node` on `redis_url` (`""` = in-process engine) in `mode`.
pub fn node(node: &str, redis_url: &str, mode: &str, extra: &[&str]) -> Gateway {
    let mut args = vec!["--anonymous", "--node-id", node, "--redis-mode", mode];
    args.extend_from_slice(extra);
    let mut envs = vec![
        ("WSFLEET_DRAIN_TOKEN", DRAIN_TOKEN),
        ("WSFLEET_PUBLISH_TOKEN", PUBLISH_TOKEN),
    ];
    if !redis_url.is_empty() {
        envs.push(("WSFLEET_REDIS_URL", redis_url));
    }
    Gateway::start(BIN, &args, &envs)
}

pub fn ready(gateway: &Gateway) -> bool {
    gateway.admin("GET", "/readyz", None, "").status == 200
}

/// Waits until every node reports ready (its backplane proved it delivers).
pub fn wait_ready(nodes: &[&Gateway]) {
    for node in nodes {
        assert!(
            wait_until(WAIT, || ready(node)),
            "node did not become ready"
        );
    }
}

/// The JSON of `/status`.
pub fn status(gateway: &Gateway) -> Value {
    let reply = gateway.admin("GET", "/status", None, "");
    serde_json::from_str(&reply.body).unwrap_or_default()
}

/// Publishes through the publish API; returns the reply's JSON (`offset`, `epoch`).
pub fn admin_publish(gateway: &Gateway, channel: &str, data: Value) -> Value {
    let body = json!({"channel": channel, "data": data}).to_string();
    let reply = gateway.api("POST", "/api/v1/publish", Some(PUBLISH_TOKEN), &body);
    assert_eq!(reply.status, 200, "publish failed: {}", reply.body);
    serde_json::from_str(&reply.body).expect("publish reply is JSON")
}

/// A raw WebSocket client.
pub struct Client {
    pub socket: Socket,
    pub id: String,
}

impl Client {
    pub async fn connect(gateway: &Gateway) -> Client {
        let (mut socket, _) = connect_async(gateway.ws_url(""))
            .await
            .expect("upgrade succeeds");
        let welcome = next_json(&mut socket).await;
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        let id = welcome["client_id"].as_str().unwrap_or_default().to_owned();
        Client { socket, id }
    }

    pub async fn send(&mut self, frame: Value) {
        self.socket
            .send(Message::text(frame.to_string()))
            .await
            .expect("sending a frame");
    }

    pub async fn next(&mut self) -> Value {
        next_json(&mut self.socket).await
    }

    /// Sends a request with `id` and returns its `ack` or `error`; `message` and `direct`
    /// frames that arrive first are returned in `other`.
    pub async fn request(&mut self, mut frame: Value, id: &str, other: &mut Vec<Value>) -> Value {
        frame["id"] = json!(id);
        self.send(frame).await;
        loop {
            let reply = self.next().await;
            if reply["id"] == id {
                return reply;
            }
            other.push(reply);
        }
    }

    /// Subscribes (with an optional `since`) and returns the ack.
    pub async fn subscribe(&mut self, channel: &str, since: Option<(u64, &str)>) -> Value {
        let mut frame = json!({"op": "subscribe", "channel": channel});
        if let Some((offset, epoch)) = since {
            frame["since"] = json!({"offset": offset, "epoch": epoch});
        }
        let ack = self.request(frame, "sub", &mut Vec::new()).await;
        assert_eq!(ack["op"], "ack", "subscribe failed: {ack}");
        ack
    }

    /// Reads `message` frames of `channel` until `count` arrived; returns their offsets and
    /// `seq` data fields in arrival order.
    pub async fn messages(&mut self, channel: &str, count: usize) -> Vec<(u64, u64)> {
        let mut seen = Vec::with_capacity(count);
        while seen.len() < count {
            let frame = self.next().await;
            if frame["op"] == "message" && frame["channel"] == channel {
                let offset = frame["offset"].as_u64().unwrap_or(u64::MAX);
                let seq = frame["data"]["seq"].as_u64().unwrap_or(u64::MAX);
                seen.push((offset, seq));
            }
        }
        seen
    }

    /// True when no data frame arrives within `quiet`.
    pub async fn silent_for(&mut self, quiet: Duration) -> bool {
        tokio::time::timeout(quiet, async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Text(text))) => return text.to_string(),
                    Some(Ok(_)) => continue,
                    _ => return String::new(),
                }
            }
        })
        .await
        .is_err()
    }
}

/// The next data frame as JSON, skipping control frames; panics after [`WAIT`].
pub async fn next_json(socket: &mut Socket) -> Value {
    let frame = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a frame arrives in time");
    serde_json::from_str(&frame).expect("server frames are JSON")
}

/// `n` consecutive sequence numbers starting at `first`, with offsets starting at `offset`.
pub fn expected(first_offset: u64, first_seq: u64, n: u64) -> Vec<(u64, u64)> {
    (0..n).map(|i| (first_offset + i, first_seq + i)).collect()
}

/// Publishes `seqs` to `channel` through the publish API of the node at `api`, one after the
/// other, from a blocking thread; returns the offsets assigned.
pub fn publish_in_background(
    api: std::net::SocketAddr,
    channel: &str,
    seqs: std::ops::Range<u64>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let channel = channel.to_owned();
    tokio::task::spawn_blocking(move || {
        seqs.map(|seq| {
            let body = json!({"channel": channel, "data": {"seq": seq}}).to_string();
            let reply =
                wsfleet_tests::http(api, "POST", "/api/v1/publish", Some(PUBLISH_TOKEN), &body);
            assert_eq!(reply.status, 200, "publish failed: {}", reply.body);
            let json: Value = serde_json::from_str(&reply.body).expect("publish reply is JSON");
            json["offset"]
                .as_u64()
                .expect("publish reply has an offset")
        })
        .collect()
    })
}

/// Channel delivery from a publisher on `from` to a subscriber on each of `to`: every message
/// arrives at every subscriber once, in order, with offsets one apart.
pub async fn delivery_across_nodes(from: &Gateway, to: &[&Gateway], channel: &str) {
    let mut subscribers = Vec::new();
    let mut epochs = Vec::new();
    for node in to {
        let mut client = Client::connect(node).await;
        let ack = client.subscribe(channel, None).await;
        assert_eq!(ack["offset"], 0, "{ack}");
        epochs.push(ack["epoch"].clone());
        subscribers.push(client);
    }
    let mut publisher = Client::connect(from).await;
    for seq in 1..=20u64 {
        let frame = json!({"op": "publish", "channel": channel, "data": {"seq": seq}});
        let ack = publisher.request(frame, "p", &mut Vec::new()).await;
        assert_eq!(ack["offset"], seq, "{ack}");
        assert!(
            ack["epoch"].as_str().is_some_and(|e| !e.is_empty()),
            "{ack}"
        );
        // The epoch a subscribe ack named before the first message is the messages' epoch.
        for epoch in &epochs {
            assert_eq!(&ack["epoch"], epoch, "{ack}");
        }
    }
    for subscriber in &mut subscribers {
        assert_eq!(subscriber.messages(channel, 20).await, expected(1, 1, 20));
        assert!(
            subscriber.silent_for(Duration::from_millis(500)).await,
            "no duplicates"
        );
    }
}

/// A direct message from a client on `from` to a client on `to` (and from the admin API of
/// `from`); an unknown client id is `not_found`.
pub async fn direct_across_nodes(from: &Gateway, to: &Gateway) {
    let mut receiver = Client::connect(to).await;
    let mut sender = Client::connect(from).await;
    let frame = json!({"op": "send", "to": receiver.id, "data": {"hi": 1}});
    // The registry entry is written as the receiver connects; allow for a slow machine.
    let mut ack = Value::Null;
    for _ in 0..50 {
        ack = sender.request(frame.clone(), "d", &mut Vec::new()).await;
        if ack["op"] == "ack" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ack, json!({"op": "ack", "id": "d"}));
    assert_eq!(
        receiver.next().await,
        json!({"op": "direct", "from": sender.id, "data": {"hi": 1}})
    );
    let body = json!({"to": receiver.id, "data": 2}).to_string();
    let reply = from.api("POST", "/api/v1/send", Some(PUBLISH_TOKEN), &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        receiver.next().await,
        json!({"op": "direct", "from": "server", "data": 2})
    );
    // Once the receiver is gone its registry entry is too.
    let gone = json!({"op": "send", "to": receiver.id, "data": 3});
    drop(receiver);
    let mut code = Value::Null;
    for _ in 0..100 {
        code = sender.request(gone.clone(), "g", &mut Vec::new()).await["code"].clone();
        if code == "not_found" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, "not_found");
    let missing = json!({"op": "send", "to": "nobody-here", "data": 1});
    let error = sender.request(missing, "m", &mut Vec::new()).await;
    assert_eq!(
        (error["op"].clone(), error["code"].clone()),
        (json!("error"), json!("not_found"))
    );
}

/// A subscriber sees 3 messages, disconnects, misses 5, and resumes on `resume_on` with
/// `since` while a publisher on `publish_on` keeps publishing: it is told `recovered: true`
/// and gets every message after `since` exactly once, in order.
pub async fn resume_after_missed_messages(
    first: &Gateway,
    resume_on: &Gateway,
    publish_on: &Gateway,
    channel: &str,
) {
    let mut client = Client::connect(first).await;
    client.subscribe(channel, None).await;
    let mut epoch = String::new();
    for seq in 1..=3 {
        epoch = admin_publish(publish_on, channel, json!({"seq": seq}))["epoch"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    assert_eq!(client.messages(channel, 3).await, expected(1, 1, 3));
    drop(client);
    for seq in 4..=8 {
        admin_publish(publish_on, channel, json!({"seq": seq}));
    }
    let live = publish_in_background(publish_on.api_addr.expect("API port"), channel, 9..29);
    let mut client = Client::connect(resume_on).await;
    let ack = client.subscribe(channel, Some((3, &epoch))).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["epoch"], epoch.as_str(), "{ack}");
    let offsets = live.await.expect("publisher thread");
    assert_eq!(offsets, (9..29).collect::<Vec<u64>>());
    assert_eq!(client.messages(channel, 25).await, expected(4, 4, 25));
    assert!(
        client.silent_for(Duration::from_millis(500)).await,
        "no duplicates"
    );

    // A resume from before what history holds (or from another epoch) says so, and goes on
    // with live messages.
    let mut late = Client::connect(resume_on).await;
    let ack = late.subscribe(channel, Some((3, "some-other-epoch"))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    admin_publish(publish_on, channel, json!({"seq": 29}));
    assert_eq!(late.messages(channel, 1).await, expected(29, 29, 1));
}

/// Ten clients resume on `resume_on` from different offsets while a publisher on `publish_on`
/// keeps publishing: each gets every message after its `since` exactly once, in order.
pub async fn concurrent_resumes(publish_on: &Gateway, resume_on: &Gateway, channel: &str) {
    let mut epoch = String::new();
    for seq in 1..=10 {
        epoch = admin_publish(publish_on, channel, json!({"seq": seq}))["epoch"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    let live = publish_in_background(publish_on.api_addr.expect("API port"), channel, 11..61);
    // Ten clients resume from different offsets while messages keep coming.
    let resumes = (0..10u64).map(|since| {
        let epoch = epoch.as_str();
        async move {
            let mut client = Client::connect(resume_on).await;
            let ack = client.subscribe(channel, Some((since, epoch))).await;
            assert_eq!(ack["recovered"], true, "{ack}");
            let count = 60 - since as usize;
            let got = client.messages(channel, count).await;
            assert_eq!(
                got,
                expected(since + 1, since + 1, count as u64),
                "since {since}"
            );
            assert!(
                client.silent_for(Duration::from_millis(300)).await,
                "no duplicates after since {since}"
            );
        }
    });
    futures::future::join_all(resumes).await;
    assert_eq!(live.await.expect("publisher thread").len(), 50);
}
