//! The wsfleet operator: reconciles `WebSocketFleet` resources into gateway pods.
