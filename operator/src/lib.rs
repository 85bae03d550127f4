//! wsfleet operator: reconciles `WebSocketFleet` resources into gateway pods and the objects
//! around them (Services, ConfigMap, drain- and publish-token Secrets, PodDisruptionBudget, NetworkPolicy,
//! PodMonitor).
//!
//! Data flows one way: observe what exists → decide (pure) → act on the API.

pub mod act;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod decide;
pub mod gateway_client;
pub mod health;
pub mod http;
pub mod leadership;
pub mod lease;
pub mod metrics;
pub mod namespace;
pub mod observe;
pub mod reconcile;
pub mod resources;
pub mod telemetry;
pub mod validate;
