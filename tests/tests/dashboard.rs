//! The Grafana dashboard the chart ships (`charts/wsfleet/dashboards/wsfleet-gateway.json`)
//! queries only metrics a real gateway exports: every metric name in every panel's PromQL is
//! looked up in the `/metrics` of a real `wsfleet-gateway` on a real Redis backplane, with a
//! client connected, subscribed and publishing so labelled series exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use wsfleet_tests::cluster::workspace_binary;
use wsfleet_tests::redis::RedisServer;
use wsfleet_tests::{Gateway, wait_until};

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/wsfleet/dashboards/wsfleet-gateway.json")
}

/// Every PromQL expression of the dashboard: panel targets and query variables.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.extend(target["expr"].as_str().map(String::from));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            exprs.extend(variable["query"]["query"].as_str().map(String::from));
        }
    }
    exprs
}

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// The metric names an expression reads: identifiers that are not functions (followed by `(`)
/// or aggregations (followed by `by (…)`/`without (…)`),
/// keywords, label names (inside `{…}` or a `by (…)`-style list), strings, durations or Grafana
/// variables. `label_values(metric{…}, label)` names its metric like any other expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut braces = 0usize;
    // Set after a grouping keyword: the next parenthesized list holds label names.
    let mut label_list_next = false;
    let mut in_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
            }
            '(' => {
                in_label_list = label_list_next;
                label_list_next = false;
                i += 1;
            }
            ')' => {
                in_label_list = false;
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let rest: String = chars[i..].iter().collect();
                let rest = rest.trim_start();
                // `sum by (…) (…)`: an aggregation with its grouping first.
                let aggregation = ["by", "without"].iter().any(|k| {
                    rest.strip_prefix(k)
                        .is_some_and(|after| after.trim_start().starts_with('('))
                });
                let lower = word.to_ascii_lowercase();
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&lower.as_str())
                {
                    label_list_next = true;
                } else {
                    let label = braces > 0
                        || in_label_list
                        || in_label_values_second_argument(&chars, start);
                    let operator =
                        next == Some(&'(') || aggregation || KEYWORDS.contains(&lower.as_str());
                    if !label && !operator {
                        names.insert(word);
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Whether the word at `start` is the label argument of `label_values(metric, label)`.
fn in_label_values_second_argument(chars: &[char], start: usize) -> bool {
    let before: String = chars[..start].iter().collect();
    let before = before.trim_end();
    before.ends_with(',') && before.starts_with("label_values(")
}

/// Metric families of a Prometheus text exposition: name → type.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// Names of the series present in an exposition (one sample at least).
fn series(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

/// Whether a queried name is exported with samples: a counter or gauge by its own name, a
/// histogram's `_bucket`/`_sum`/`_count`, a summary's `_sum`/`_count` (a bare histogram or
/// summary name has no series of its own).
fn exported(name: &str, families: &BTreeMap<String, String>, series: &BTreeSet<String>) -> bool {
    if !series.contains(name) {
        return false;
    }
    let family_of = |suffix: &str| {
        name.strip_suffix(suffix)
            .and_then(|base| families.get(base))
    };
    match families.get(name).map(String::as_str) {
        Some("histogram" | "summary") => false,
        Some(_) => true,
        None => {
            family_of("_bucket").is_some_and(|k| k == "histogram")
                || ["_sum", "_count"]
                    .iter()
                    .any(|s| family_of(s).is_some_and(|k| k == "histogram" || k == "summary"))
        }
    }
}

#[test]
fn the_metric_name_extraction_reads_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (pod, le) (rate(a_bucket{namespace=~"$namespace", result="x"}[$__rate_interval]))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("sum(rate(a_sum[5m])) / sum(rate(a_count[5m])) or vector(0)"),
        ["a_count", "a_sum"]
    );
    assert_eq!(
        names("count(up == 0) > bool 1 unless on (job) b"),
        ["b", "up"]
    );
    assert_eq!(
        names(r#"label_values(wsfleet_connections{namespace=~"$namespace"}, pod)"#),
        ["wsfleet_connections"]
    );
    assert_eq!(names("histogram_quantile(0.99, x_bucket)"), ["x_bucket"]);
    let families = families(
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n# TYPE c counter\nc 1\n# TYPE s summary\ns_sum 1\n",
    );
    let present = series("h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\nc 1\ns_sum 1\n");
    for good in ["h_bucket", "h_sum", "h_count", "c", "s_sum"] {
        assert!(exported(good, &families, &present), "{good}");
    }
    for bad in ["h", "c_bucket", "c_count", "s_count", "missing", "s"] {
        assert!(!exported(bad, &families, &present), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_reads_a_metric_the_gateway_exports() {
    let text = std::fs::read_to_string(dashboard_path()).expect("the dashboard JSON");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert_eq!(dashboard["uid"], "wsfleet-gateway");
    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 15, "the dashboard has its panels: {exprs:?}");
    let queried: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for expected in [
        "wsfleet_connections",
        "wsfleet_handshakes_total",
        "wsfleet_messages_out_total",
        "wsfleet_draining",
        "wsfleet_backplane_state",
        "wsfleet_delivery_latency_seconds_bucket",
    ] {
        assert!(queried.contains(expected), "the dashboard shows {expected}");
    }

    // A real node on a real Redis, with a subscriber that receives a published message.
    let redis = RedisServer::start().expect("redis-server");
    let bin = workspace_binary("wsfleet-gateway");
    let gateway = Gateway::start(
        bin.to_str().expect("UTF-8 path"),
        &[
            "--anonymous",
            "--node-id",
            "dash-1",
            "--redis-mode",
            "standalone",
        ],
        &[
            ("WSFLEET_REDIS_URL", &redis.url()),
            ("WSFLEET_PUBLISH_TOKEN", "dashboard-test"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            gateway.admin("GET", "/readyz", None, "").status == 200
        }),
        "the node becomes ready on its backplane"
    );
    let client = wsfleet_client::Client::connect(&gateway.ws_url(""), None)
        .await
        .expect("a client connects");
    let mut subscription = client.subscribe("dashboard").await.expect("subscribe");
    client
        .publish("dashboard", json!({"hello": 1}))
        .await
        .expect("publish");
    let delivered = tokio::time::timeout(Duration::from_secs(10), subscription.recv()).await;
    assert!(matches!(delivered, Ok(Some(_))), "the message comes back");

    let exposition = gateway.admin("GET", "/metrics", None, "").body;
    let families = families(&exposition);
    let series = series(&exposition);
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !exported(name, &families, &series))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the gateway does not export: {missing:?}\n\
         exported: {series:?}"
    );
    drop(client);
}
