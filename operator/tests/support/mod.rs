//! Shared pieces of the operator's integration tests.

pub mod admin_node;
