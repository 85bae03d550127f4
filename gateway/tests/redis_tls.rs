//! The backplane over TLS (`rediss://`) to real `redis-server` processes started with
//! `--tls-port` and certificates made by the test: standalone with a client certificate the
//! server requires, Cluster with a CA bundle, and the refusals — a CA that did not sign the
//! server's certificate, a missing client certificate — which leave the node not ready, say why
//! in `/status`, and publish nothing.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{PUBLISH_TOKEN, node, status, wait_ready};
use wsfleet_tests::redis::{RedisCluster, RedisServer};
use wsfleet_tests::tls::TlsFiles;
use wsfleet_tests::{Gateway, wait_until};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A node on `url` trusting `ca`, with the client certificate of `client` when given.
fn tls_node(
    name: &str,
    url: &str,
    mode: &str,
    ca: &TlsFiles,
    client: Option<&TlsFiles>,
) -> Gateway {
    let mut extra = vec!["--redis-tls-ca-file", path(&ca.ca_cert)];
    if let Some(client) = client {
        extra.extend([
            "--redis-tls-cert-file",
            path(&client.client_cert),
            "--redis-tls-key-file",
            path(&client.client_key),
        ]);
    }
    node(name, url, mode, &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_over_tls_with_a_client_certificate() {
    let tls = TlsFiles::generate("standalone");
    let redis = RedisServer::start_tls(&tls, true).expect("redis-server starts with TLS");
    let a = tls_node("a", &redis.tls_url(), "standalone", &tls, Some(&tls));
    let b = tls_node("b", &redis.tls_url(), "standalone", &tls, Some(&tls));
    wait_ready(&[&a, &b]);
    assert_eq!(status(&a)["backplane_error"], Value::Null);
    support::delivery_across_nodes(&a, &[&a, &b], "room:tls").await;
    support::direct_across_nodes(&a, &b).await;
    // Every connection the server holds came in through the TLS port: the plain one saw only
    // this test's own `redis-cli`.
    let clients = redis.cli(&["CLIENT", "LIST"]).expect("client list");
    let plain = format!("laddr=127.0.0.1:{} ", redis.port());
    let gateway_links = clients
        .lines()
        .filter(|l| !l.contains("cmd=client"))
        .count();
    assert!(gateway_links >= 4, "{clients}");
    assert!(
        clients.lines().filter(|l| l.contains(&plain)).count() == 1,
        "only redis-cli uses the plain port:\n{clients}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tls_with_a_ca_bundle() {
    let tls = TlsFiles::generate("cluster");
    let cluster = RedisCluster::start_tls(&tls).expect("TLS redis cluster starts");
    let seeds = cluster.tls_urls().join(",");
    let a = tls_node("ca", &seeds, "cluster", &tls, None);
    let b = tls_node("cb", &seeds, "cluster", &tls, None);
    wait_ready(&[&a, &b]);
    // Several channels, so their slots land on different masters.
    for channel in ["room:a", "room:b", "room:c"] {
        support::delivery_across_nodes(&a, &[&b], channel).await;
    }
    support::direct_across_nodes(&b, &a).await;
}

/// Waits until the node says why its backplane is down, then checks it stays unready and
/// refuses to publish with a clear answer; returns the reason.
fn refused(gateway: &Gateway) -> String {
    let mut reason = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            reason = status(gateway)["backplane_error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            !reason.is_empty()
        }),
        "the node reports why it cannot reach Redis"
    );
    let report = status(gateway);
    assert_eq!(
        (report["ready"].clone(), report["backplane"].clone()),
        (json!(false), json!("down")),
        "{report}"
    );
    assert_eq!(gateway.admin("GET", "/readyz", None, "").status, 503);
    let body = json!({"channel": "room:x", "data": {"n": 1}}).to_string();
    let reply = gateway.api("POST", "/api/v1/publish", Some(PUBLISH_TOKEN), &body);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("unavailable"), "{}", reply.body);
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_missing_client_certificate_is_refused_and_publishes_nothing() {
    let tls = TlsFiles::generate("right");
    let wrong = TlsFiles::generate("wrong");
    let redis = RedisServer::start_tls(&tls, true).expect("redis-server starts with TLS");

    let untrusting = tls_node("w", &redis.tls_url(), "standalone", &wrong, Some(&tls));
    let reason = refused(&untrusting);
    eprintln!("wrong CA: {reason}");
    assert!(reason.contains("certificate"), "{reason}");

    let anonymous = tls_node("m", &redis.tls_url(), "standalone", &tls, None);
    let reason = refused(&anonymous);
    eprintln!("no client certificate: {reason}");
    assert!(reason.contains("Certificate"), "{reason}");

    // Nothing reached Redis: no history, no registry entry, no presence.
    let keys = redis.cli(&["KEYS", "*"]).expect("keys");
    assert_eq!(keys.trim(), "", "nothing was written: {keys}");
}
