//! Every manifest in `examples/` must pass the generated CRD's OpenAPI schema (as kubectl's strict
//! field validation would: unknown fields are errors) and the operator's own spec checks.

use std::path::PathBuf;

use kube::CustomResourceExt;
use serde_json::Value;
use wsfleet_operator::crd::WebSocketFleet;
use wsfleet_operator::decide::names::RandomNames;
use wsfleet_operator::decide::{Observation, decide};
use wsfleet_operator::resources::sysctl::KubeVersion;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The CRD's openAPIV3Schema, made strict: objects that list their properties reject others
/// (the API server would prune them; `kubectl apply` rejects them by default).
fn strict_schema() -> Value {
    let crd = serde_json::to_value(WebSocketFleet::crd()).expect("CRD serializes");
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    forbid_unknown_fields(&mut schema);
    schema
}

fn forbid_unknown_fields(schema: &mut Value) {
    if let Some(map) = schema.as_object_mut() {
        let preserves = map.contains_key("x-kubernetes-preserve-unknown-fields");
        if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves
        {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        for child in map.values_mut() {
            forbid_unknown_fields(child);
        }
    } else if let Some(items) = schema.as_array_mut() {
        items.iter_mut().for_each(forbid_unknown_fields);
    }
}

/// The part of a manifest the generated schema describes (apiVersion, kind and metadata are
/// the API server's business).
fn body(manifest: &Value) -> Value {
    serde_json::json!({"spec": manifest["spec"]})
}

fn schema_errors(validator: &jsonschema::Validator, manifest: &Value) -> Vec<String> {
    validator
        .iter_errors(&body(manifest))
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_example_validates() {
    let validator = jsonschema::validator_for(&strict_schema()).expect("schema compiles");
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let manifest: Value = serde_saphyr::from_str(&text).expect("valid YAML");
        let errors = schema_errors(&validator, &manifest);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        let mut fleet: WebSocketFleet = serde_json::from_value(manifest).expect("deserializes");
        if let Err(e) = wsfleet_operator::validate::spec(&fleet.spec) {
            panic!("{}: {e}", path.display());
        }
        // As stored by the API server: it would then bring up the whole fleet, healthy.
        fleet.metadata.uid = Some("uid".into());
        fleet.metadata.generation = Some(1);
        let plan = decide(
            Observation {
                fleet: &fleet,
                pods: &[],
                config_maps: &[],
                server: KubeVersion {
                    major: 1,
                    minor: 32,
                },
                pod_monitor_api: false,
                now: jiff::Timestamp::UNIX_EPOCH,
            },
            &mut RandomNames,
        );
        let degraded = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded");
        assert_eq!(
            degraded.map(|c| c.status.as_str()),
            Some("False"),
            "{}: {degraded:?}",
            path.display()
        );
        assert!(
            !plan.create.is_empty(),
            "{}: creates no nodes",
            path.display()
        );
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the minimal, production and autoscaled examples, saw {seen}"
    );
}

#[test]
fn schema_rejects_what_it_should() {
    let validator = jsonschema::validator_for(&strict_schema()).expect("schema compiles");
    let base = serde_json::json!({
        "apiVersion": "wsfleet.io/v1alpha1", "kind": "WebSocketFleet",
        "spec": {"image": "gw:1", "auth": {"anonymous": true}}
    });
    assert!(schema_errors(&validator, &base).is_empty());
    let bad_specs = [
        (
            "missing image",
            serde_json::json!({"auth": {"anonymous": true}}),
        ),
        (
            "negative replicas",
            serde_json::json!({"image": "gw", "replicas": -1}),
        ),
        (
            "unknown policy",
            serde_json::json!({"image": "gw", "connections": {"slowConsumerPolicy": "Ignore"}}),
        ),
        (
            "cap out of range",
            serde_json::json!({"image": "gw", "connections": {"maxPerNode": 0}}),
        ),
        (
            "bad port range",
            serde_json::json!({"image": "gw", "sysctls": {"values": {"net.ipv4.ip_local_port_range": "1024-65535"}}}),
        ),
        (
            "unknown sysctl mode",
            serde_json::json!({"image": "gw", "sysctls": {"mode": "Privileged"}}),
        ),
        (
            "redis url scheme",
            serde_json::json!({"image": "gw", "backplane": {"redis": {"url": "http://r"}}}),
        ),
        (
            "typo field",
            serde_json::json!({"image": "gw", "replica": 3}),
        ),
    ];
    for (name, spec) in bad_specs {
        let mut manifest = base.clone();
        manifest["spec"] = spec;
        assert!(
            !schema_errors(&validator, &manifest).is_empty(),
            "{name} was accepted"
        );
    }
}
