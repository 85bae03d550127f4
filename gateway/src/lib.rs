//! The wsfleet gateway: a WebSocket node that holds client connections and routes messages
//! between nodes over a backplane.

pub mod backplane;
