//! The Helm chart, checked with the real `helm` binary: it lints, it renders with default and
//! optional values, every rendered object parses as its typed `k8s-openapi` kind, its RBAC is
//! bound to the operator's ServiceAccount, and it ships the same CRD as `crds/`. (That the RBAC
//! is enough is proven where the operator runs under it: the `operator_*` scenarios.)

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/wsfleet")
}

/// Runs helm with `args`; a missing helm is a failure with a hint, never a skip.
fn helm(args: &[&str]) -> String {
    let output = Command::new("helm")
        .args(args)
        .output()
        .expect("running helm (install it as .ci/run does: see README, 'Running the tests')");
    assert!(
        output.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

/// Every object `helm template` renders with `sets`, as JSON values.
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "wsfleet",
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        "wsfleet-system",
        "--include-crds",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let yaml = helm(&args);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("helm renders valid YAML");
    docs.into_iter().filter(|doc| !doc.is_null()).collect()
}

fn parse<T: serde::de::DeserializeOwned>(object: &Value) -> T {
    serde_json::from_value(object.clone()).unwrap_or_else(|err| {
        panic!(
            "{} {} does not parse as its typed kind: {err}",
            object["kind"], object["metadata"]["name"]
        )
    })
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn chart_lints() {
    let chart = chart();
    helm(&["lint", "--strict", chart.to_str().expect("UTF-8 path")]);
}

#[test]
fn every_rendered_object_parses_as_its_typed_kind() {
    for sets in [
        &[][..],
        &[
            "metrics.serviceMonitor.enabled=true",
            "watchNamespace=apps",
            "grafanaDashboard.enabled=true",
        ],
    ] {
        let objects = render(sets);
        assert!(!objects.is_empty(), "the chart renders nothing");
        for object in &objects {
            match object["kind"].as_str().unwrap_or_default() {
                "Deployment" => drop(parse::<Deployment>(object)),
                "ServiceAccount" => drop(parse::<ServiceAccount>(object)),
                "Service" => drop(parse::<Service>(object)),
                "ClusterRole" => drop(parse::<ClusterRole>(object)),
                "ClusterRoleBinding" => drop(parse::<ClusterRoleBinding>(object)),
                "Role" => drop(parse::<Role>(object)),
                "RoleBinding" => drop(parse::<RoleBinding>(object)),
                "CustomResourceDefinition" => drop(parse::<CustomResourceDefinition>(object)),
                "ConfigMap" => drop(parse::<ConfigMap>(object)),
                // prometheus-operator's kind has no k8s-openapi type: check its shape by hand.
                "ServiceMonitor" => {
                    assert_eq!(object["apiVersion"], "monitoring.coreos.com/v1");
                    assert_eq!(object["spec"]["endpoints"][0]["path"], "/metrics");
                }
                other => panic!("the chart renders an unexpected kind {other:?}"),
            }
        }
        let monitors = of_kind(&objects, "ServiceMonitor").len();
        assert_eq!(
            monitors,
            usize::from(!sets.is_empty()),
            "ServiceMonitor only when enabled"
        );
        let dashboards = of_kind(&objects, "ConfigMap").len();
        assert_eq!(
            dashboards,
            usize::from(!sets.is_empty()),
            "dashboard ConfigMap only when enabled"
        );
    }
}

/// The dashboard ConfigMap carries the Grafana sidecar's label and the dashboard file as is.
#[test]
fn dashboard_config_map_ships_the_dashboard_for_the_sidecar() {
    let objects = render(&[
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.namespace=monitoring",
    ]);
    let map: ConfigMap = parse(of_kind(&objects, "ConfigMap")[0]);
    assert_eq!(map.metadata.namespace.as_deref(), Some("monitoring"));
    let labels = map.metadata.labels.expect("labels");
    assert_eq!(labels["grafana_dashboard"], "1");
    let data = map.data.expect("data");
    let shipped: Value = serde_json::from_str(&data["wsfleet-gateway.json"]).expect("JSON");
    let file = std::fs::read_to_string(chart().join("dashboards/wsfleet-gateway.json"))
        .expect("the dashboard file");
    let file: Value = serde_json::from_str(&file).expect("JSON");
    assert_eq!(shipped, file, "the ConfigMap holds the dashboard unchanged");
}

/// The chart's RBAC is proven on a real API server: the operator runs under exactly these
/// roles in the operator scenarios, and any refusal fails them. Here: the bindings name the
/// operator's own ServiceAccount.
#[test]
fn rbac_is_bound_to_the_operators_service_account() {
    let objects = render(&[]);
    assert_eq!(of_kind(&objects, "ClusterRole").len(), 1);
    assert_eq!(of_kind(&objects, "Role").len(), 1);
    // The bindings give those roles to the operator's own ServiceAccount.
    let account: ServiceAccount = parse(of_kind(&objects, "ServiceAccount")[0]);
    for binding in of_kind(&objects, "ClusterRoleBinding")
        .into_iter()
        .chain(of_kind(&objects, "RoleBinding"))
    {
        let subjects = &binding["subjects"];
        assert_eq!(
            subjects[0]["name"],
            account.metadata.name.clone().unwrap_or_default()
        );
        assert_eq!(subjects[0]["namespace"], "wsfleet-system");
    }
}

#[test]
fn operator_deployment_is_ha_and_locked_down() {
    let objects = render(&[]);
    let deployment: Deployment = parse(of_kind(&objects, "Deployment")[0]);
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2), "two replicas with leader election");
    let pod = spec.template.spec.expect("pod spec");
    let pod_security = pod.security_context.expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let container = &pod.containers[0];
    let security = container.security_context.clone().expect("securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let args = container.args.clone().unwrap_or_default();
    for flag in [
        "--log-format=json",
        "--listen=0.0.0.0:8080",
        "--lease-name=",
    ] {
        assert!(
            args.iter().any(|a| a.starts_with(flag)),
            "{flag} missing from {args:?}"
        );
    }
    let env: Vec<String> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    for name in ["POD_NAME", "POD_NAMESPACE"] {
        assert!(
            env.contains(&name.to_string()),
            "{name} missing (leader election identity)"
        );
    }
    let probe = container.liveness_probe.clone().expect("liveness probe");
    assert_eq!(
        probe.http_get.expect("httpGet").path.as_deref(),
        Some("/healthz")
    );
    assert!(container.resources.is_some(), "resources set from values");
}

#[test]
fn chart_ships_the_generated_crd() {
    let generated = std::fs::read_to_string(repo().join("crds/websocketfleet.yaml"))
        .expect("reading crds/websocketfleet.yaml");
    let shipped = std::fs::read_to_string(chart().join("crds/websocketfleet.yaml"))
        .expect("reading charts/wsfleet/crds/websocketfleet.yaml");
    assert!(
        generated == shipped,
        "charts/wsfleet/crds/websocketfleet.yaml is stale: cp crds/websocketfleet.yaml charts/wsfleet/crds/"
    );
}
