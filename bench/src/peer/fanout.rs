//! The `fanout` scenario against a peer (Nchan or Socket.IO): the same subscribers, publisher,
//! stamps and accounting as against wsfleet (`crate::fanout`), with raw WebSocket subscribers
//! speaking the peer's protocol instead of the wsfleet client.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{Frame, Protocol, nchan, socketio, wsfleet};
use crate::dial::{self, Conn, Target};
use crate::fanout::{Consumed, FanoutArgs, FanoutReport, Group, Received};
use crate::fanout::{Subscribers, measure, subscribe_all};
use crate::sequence;

/// Per-step limit for a subscriber's connect and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Nchan acknowledges no subscription: this pause after the last subscriber connected lets
/// its Redis SUBSCRIBE complete before the first publish.
const NCHAN_SUBSCRIBE_GRACE: Duration = Duration::from_secs(1);

struct Subscriber {
    conn: Conn,
    /// The node's base URL: peers have no node names.
    node: String,
}

async fn connect_subscriber(
    protocol: Protocol,
    node: String,
    channel: String,
) -> Result<Subscriber> {
    let target = Target::new(&protocol.endpoint(&node, &channel), None)?;
    let mut conn = super::open(protocol, &target, None, CONNECT_TIMEOUT)
        .await
        .map_err(|e| anyhow!("connecting to {node}: {}", dial::classify(&e)))?;
    let subscribed = match protocol {
        Protocol::Socketio => Some(
            tokio::time::timeout(CONNECT_TIMEOUT, socketio::subscribe(&mut conn, &channel)).await,
        ),
        Protocol::WsfleetRaw => Some(
            tokio::time::timeout(CONNECT_TIMEOUT, wsfleet::subscribe(&mut conn, &channel)).await,
        ),
        Protocol::Nchan | Protocol::Wsfleet => None,
    };
    if let Some(subscribed) = subscribed {
        subscribed
            .map_err(|_| anyhow!("subscribe on {node} timed out"))?
            .with_context(|| format!("subscribing on {node}"))?;
    }
    Ok(Subscriber { conn, node })
}

enum Publisher {
    Nchan(nchan::Publisher),
    Socketio(socketio::Publisher),
    Wsfleet(wsfleet::Publisher),
}

impl Publisher {
    async fn connect(protocol: Protocol, node: &str, channel: &str) -> Result<Publisher> {
        match protocol {
            Protocol::Nchan => Ok(Publisher::Nchan(nchan::Publisher::new(
                nchan::publisher_url(node, channel)?,
            ))),
            Protocol::Socketio | Protocol::WsfleetRaw => {
                let target = Target::new(&protocol.endpoint(node, channel), None)?;
                let conn = super::open(protocol, &target, None, CONNECT_TIMEOUT)
                    .await
                    .map_err(|e| anyhow!("publisher on {node}: {}", dial::classify(&e)))?;
                Ok(match protocol {
                    Protocol::Socketio => Publisher::Socketio(socketio::Publisher::new(conn)),
                    _ => Publisher::Wsfleet(wsfleet::Publisher::new(conn)),
                })
            }
            Protocol::Wsfleet => Err(anyhow!("wsfleet fan-out uses the wsfleet client")),
        }
    }

    async fn publish(&self, channel: &str, data: Value) -> bool {
        match self {
            Publisher::Nchan(p) => p.publish(data.to_string()).await,
            Publisher::Socketio(p) => p.publish(channel, data).await,
            Publisher::Wsfleet(p) => p.publish(channel, data).await,
        }
    }
}

/// Reads one subscriber's connection until it has all `total` messages, or until `stop`.
async fn consume(
    mut sub: Subscriber,
    protocol: Protocol,
    group: Group,
    total: u64,
    mut stop: watch::Receiver<bool>,
) -> Consumed {
    let mut received = Received::new(&sub.node);
    while !received.has_all(total) {
        tokio::select! {
            frame = sub.conn.next() => match frame {
                Some(Ok(Message::Text(text))) => match super::read_frame(protocol, text.as_str()) {
                    Frame::Data(data) => received.receive(&data, &group),
                    Frame::Reply(answer) => {
                        if sub.conn.send(Message::text(answer)).await.is_err() {
                            received.report_mut().disconnects += 1;
                            break;
                        }
                    }
                    Frame::Control => {}
                    Frame::Foreign => received.report_mut().foreign += 1,
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    received.report_mut().disconnects += 1;
                    break;
                }
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => break,
        }
    }
    received.finish(sub)
}

/// Runs the scenario; `total` messages were validated by the caller.
pub async fn run(args: &FanoutArgs, total: u64) -> Result<FanoutReport> {
    let protocol = args.protocol;
    if protocol == Protocol::Nchan {
        nchan::check_channel(&args.channel)?;
    }
    let publisher_node = args.urls[args.publisher_node].clone();
    let (subscribers, subscribe_failures) = subscribe_all(args, |url| {
        connect_subscriber(protocol, url, args.channel.clone())
    })
    .await;
    let publisher = Publisher::connect(protocol, &publisher_node, &args.channel).await?;
    if protocol == Protocol::Nchan {
        tokio::time::sleep(NCHAN_SUBSCRIBE_GRACE).await;
    }

    let mut consumers = Subscribers::new(subscribe_failures, publisher_node);
    for sub in subscribers {
        let node = sub.node.clone();
        consumers.spawn(&node, |group, stop| {
            consume(sub, protocol, group, total, stop)
        });
    }
    let channel = args.channel.as_str();
    let publisher = &publisher;
    let publish = sequence::publish_with(args.rate, total, |data| publisher.publish(channel, data));
    measure(args, total, consumers, publish).await
}
