//! The systems the load tool measures: wsfleet itself and the peers users would otherwise pick,
//! nginx + Nchan and Socket.IO 4 (`--protocol`). This module owns what differs between them:
//! which URL a node is dialed on, what makes a fresh WebSocket usable, and how a received text
//! frame is read. Node URLs of the peers are their bases (`ws://host:port`).

pub mod acked;
pub mod engineio;
pub mod fanout;
pub mod nchan;
pub mod socketio;
pub mod wsfleet;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dial::{self, Conn, DialError, Target};

/// The channel idle connections to Nchan subscribe to (an Nchan connection always subscribes).
pub const IDLE_CHANNEL: &str = "bench.idle";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// wsfleet gateways (`ws://host:port/ws`).
    #[default]
    Wsfleet,
    /// wsfleet gateways driven over a raw WebSocket like the peers (fan-out subscribers and
    /// publisher without the Rust client); for idle connections the same as `wsfleet`.
    WsfleetRaw,
    /// nginx + Nchan: WebSocket subscribers on `/sub/<channel>`, HTTP POST to `/pub/<channel>`.
    Nchan,
    /// Socket.IO 4 over a raw Engine.IO v4 WebSocket (`/socket.io/?EIO=4&transport=websocket`).
    Socketio,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Wsfleet => "wsfleet",
            Protocol::WsfleetRaw => "wsfleet-raw",
            Protocol::Nchan => "nchan",
            Protocol::Socketio => "socketio",
        }
    }

    /// The WebSocket URL to dial for a node given as `url`; `channel` only matters for Nchan,
    /// where the URL is the subscription.
    pub fn endpoint(self, url: &str, channel: &str) -> String {
        match self {
            Protocol::Wsfleet | Protocol::WsfleetRaw => url.to_owned(),
            Protocol::Nchan => nchan::subscriber_url(url, channel),
            Protocol::Socketio => engineio::websocket_url(url),
        }
    }
}

/// Dials and makes the connection usable (for Socket.IO: the namespace connect), within
/// `timeout` for each of the two steps.
pub async fn open(
    protocol: Protocol,
    target: &Target,
    source: Option<Ipv4Addr>,
    timeout: Duration,
) -> Result<Conn, DialError> {
    let mut ws = dial::dial(target, source, timeout).await?;
    if protocol == Protocol::Socketio {
        match tokio::time::timeout(timeout, socketio::connect(&mut ws)).await {
            Ok(Ok(())) => {}
            Ok(Err(cause)) => return Err(DialError::Session(cause)),
            Err(_) => return Err(DialError::Timeout),
        }
    }
    Ok(ws)
}

/// What a text frame from a peer means to a subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A published message's data.
    Data(Value),
    /// Protocol upkeep the subscriber must answer with this text frame (Socket.IO's ping).
    Reply(&'static str),
    /// Protocol upkeep that needs no answer.
    Control,
    /// Not something this protocol sends.
    Foreign,
}

/// Reads one text frame a subscriber received.
pub fn read_frame(protocol: Protocol, text: &str) -> Frame {
    match protocol {
        // The wsfleet adapter is the Rust client, which reads its own frames.
        Protocol::Wsfleet => Frame::Foreign,
        Protocol::WsfleetRaw => match wsfleet::read(text) {
            Some(wsfleet::ServerFrame::Message(data)) => Frame::Data(data),
            Some(_) => Frame::Control,
            None => Frame::Foreign,
        },
        Protocol::Nchan => serde_json::from_str(text).map_or(Frame::Foreign, Frame::Data),
        Protocol::Socketio => match engineio::decode(text) {
            Ok(engineio::Packet::Ping) => Frame::Reply(engineio::PONG),
            Ok(engineio::Packet::Message(p)) => match p.event_payload("message") {
                Some(data) => Frame::Data(data.clone()),
                None => Frame::Control,
            },
            Ok(_) => Frame::Control,
            Err(_) => Frame::Foreign,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_per_protocol() {
        let ws = "ws://127.0.0.1:9000";
        assert_eq!(
            Protocol::Wsfleet.endpoint("ws://127.0.0.1:9000/ws", "c"),
            "ws://127.0.0.1:9000/ws"
        );
        assert_eq!(
            Protocol::Nchan.endpoint(ws, "c"),
            "ws://127.0.0.1:9000/sub/c"
        );
        assert_eq!(
            Protocol::Socketio.endpoint(ws, "c"),
            "ws://127.0.0.1:9000/socket.io/?EIO=4&transport=websocket"
        );
    }

    #[test]
    fn frames_per_protocol() {
        let data = json!({"seq": 4, "ts_us": 10});
        assert_eq!(
            read_frame(Protocol::Nchan, &data.to_string()),
            Frame::Data(data.clone())
        );
        assert_eq!(read_frame(Protocol::Nchan, "not json"), Frame::Foreign);
        assert_eq!(
            read_frame(Protocol::Socketio, &format!(r#"42["message",{data}]"#)),
            Frame::Data(data)
        );
        assert_eq!(read_frame(Protocol::Socketio, "2"), Frame::Reply("3"));
        assert_eq!(
            read_frame(Protocol::Socketio, r#"40{"sid":"a"}"#),
            Frame::Control
        );
        assert_eq!(
            read_frame(Protocol::Socketio, r#"42["other",1]"#),
            Frame::Control
        );
        assert_eq!(read_frame(Protocol::Socketio, "x"), Frame::Foreign);
        assert_eq!(
            read_frame(
                Protocol::WsfleetRaw,
                r#"{"op":"message","channel":"c","offset":1,"data":7}"#
            ),
            Frame::Data(json!(7))
        );
        assert_eq!(
            read_frame(Protocol::WsfleetRaw, r#"{"op":"welcome"}"#),
            Frame::Control
        );
    }
}
