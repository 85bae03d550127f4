//! The contract between wsfleet's three programs, written once.
//!
//! The operator writes the gateway's config file and calls each node's admin API; app services
//! call the publish API; clients speak the WebSocket protocol. Each side used to spell these
//! out by hand, so a key renamed on one side silently fell back to a default on the other.
//! Here they have one definition that the operator, the gateway and the Rust client share:
//!
//! - [`config`]: `gateway.toml`, the file the operator renders and the gateway reads (unknown
//!   keys refused), with its four enums;
//! - [`admin`]: the admin API's `/status` report and `/drain` request and their bounds, and
//!   the publish API's bodies;
//! - [`names`]: what a channel name and a client id may be;
//! - [`codes`]: the protocol's error codes and the WebSocket close codes the gateway uses.
//!
//! WebSocket frame types stay with each side: the gateway encodes from borrowed data, the
//! client decodes into owned values; `docs/protocol-examples.json` holds both to one text.

pub mod admin;
pub mod codes;
pub mod config;
pub mod names;

pub use admin::{BackplaneState, DrainProgress, DrainReply, DrainRequest, NodeState, StatusReport};
pub use codes::ErrorCode;
pub use config::{GatewayConfig, JwtAlgorithm, RedisMode, RefusalMode, SlowConsumerPolicy};
