//! Rust client for the wsfleet gateway protocol.
