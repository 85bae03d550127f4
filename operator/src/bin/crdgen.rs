//! Prints the `WebSocketFleet` CustomResourceDefinition as YAML (`crds/websocketfleet.yaml`).
//!
//! Regenerate with: `cargo run -q -p wsfleet-operator --bin crdgen > crds/websocketfleet.yaml`

fn main() -> anyhow::Result<()> {
    print!("{}", wsfleet_operator::crdgen::crd_yaml()?);
    Ok(())
}
