//! The wsfleet gateway: a WebSocket node that holds client connections and routes messages
//! between nodes over a backplane. Data flows socket → protocol → engine → subscriptions →
//! sockets.

pub mod engine;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod subscriptions;
