//! Rendering of the CustomResourceDefinition, shared by the `crdgen` binary and the test that
//! keeps `crds/websocketfleet.yaml` in step with the Rust types.

use kube::CustomResourceExt;

use crate::crd::WebSocketFleet;

/// The command that rewrites the committed CRD file.
pub const REGENERATE: &str =
    "cargo run -q -p wsfleet-operator --bin crdgen > crds/websocketfleet.yaml";

/// The CRD as YAML, with a header saying it is generated.
pub fn crd_yaml() -> anyhow::Result<String> {
    let body = serde_saphyr::to_string(&WebSocketFleet::crd())?;
    Ok(format!(
        "# Generated from operator/src/crd.rs — do not edit.\n# Regenerate: {REGENERATE}\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_is_fresh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/websocketfleet.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = crd_yaml().expect("render CRD");
        assert!(
            committed == generated,
            "crds/websocketfleet.yaml is stale or missing; regenerate it with `{REGENERATE}`"
        );
    }
}
