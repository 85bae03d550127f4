//! The wsfleet gateway: a WebSocket node that holds client connections and routes messages
//! between nodes over a backplane. Data flows socket → protocol → engine → subscriptions →
//! sockets.

pub mod admin;
pub mod api;
pub mod auth;
pub mod backplane;
pub mod config;
pub mod connection;
pub mod credentials;
pub mod drain;
pub mod engine;
pub mod frame;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod protocol;
pub mod server;
pub mod subscriptions;
pub mod upgrade;
pub mod watched;
pub mod wire;
