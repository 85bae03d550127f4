//! Rust client for the wsfleet gateway protocol (docs/protocol.md).
//!
//! A [`Client`] keeps one WebSocket to a fleet of gateway nodes and survives losing it: it obeys
//! the gateway's `reconnect` hints and close codes, otherwise reconnects with capped exponential
//! backoff and full jitter over its endpoints, and resumes every subscription from the last
//! offset it delivered, so an application sees each channel message once and in order. Given a
//! token callback ([`ClientConfig::token_callback`]) it connects with a fresh JWT every time
//! and refreshes it on the live connection before it expires.
//!
//! ```no_run
//! use std::time::Duration;
//! use wsfleet_client::{Client, ClientConfig, Event};
//!
//! # async fn run() -> Result<(), wsfleet_client::Error> {
//! // Two nodes: the client moves to the other one when its node drains or dies.
//! let config = ClientConfig::new(["ws://127.0.0.1:8081/ws", "ws://127.0.0.1:8082/ws"])
//!     .token("<jwt>")
//!     .backoff(Duration::from_millis(100), Duration::from_secs(30));
//! let client = Client::connect_with(config).await?;
//! let mut events = client.events();
//! let mut news = client.subscribe("news").await?;
//! client.publish("news", serde_json::json!({"title": "hello"})).await?;
//! while let Some(message) = news.recv().await {
//!     println!("{} #{}: {}", message.channel, message.offset, message.data);
//!     # break;
//! }
//! // Missed messages that could not be replayed are reported, never hidden.
//! if let Ok(Event::RecoveryFailed { channel }) = events.try_recv() {
//!     eprintln!("gap in {channel}");
//! }
//! # Ok(())
//! # }
//! ```

mod backoff;
mod client;
mod config;
mod cursor;
mod driver;
mod error;
mod event;
pub mod protocol;
mod session;
mod state;
pub mod token;

pub use backoff::Backoff;
pub use client::{Client, Subscription};
pub use config::ClientConfig;
pub use cursor::{AckOutcome, Cursor};
pub use error::{Error, ErrorCode};
pub use event::Event;
pub use session::{Ack, Direct, Message, Session};
pub use token::{TokenResult, TokenSource};
