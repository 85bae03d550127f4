//! Rust client for the wsfleet gateway protocol (docs/protocol.md).
//!
//! A [`Client`] keeps one WebSocket to a fleet of gateway nodes and survives losing it: it obeys
//! the gateway's `reconnect` hints and close codes, otherwise reconnects with capped exponential
//! backoff and full jitter over its endpoints, and resumes every subscription from the last
//! offset it delivered, so an application sees each channel message once and in order.

mod backoff;
mod client;
mod cursor;
mod driver;
mod error;
mod event;
pub mod protocol;

pub use backoff::Backoff;
pub use client::{Client, ClientConfig, Direct, Message, Session, SubscribeAck, Subscription};
pub use cursor::{AckOutcome, Cursor};
pub use error::{Error, ErrorCode};
pub use event::Event;
