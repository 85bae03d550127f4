//! A fleet's credentials on a real API server: each token opens one door, rotations reach
//! running nodes without restarting them, and a Redis that needs TLS is reached with the CA
//! from a Secret (and refused, visibly, with the wrong one).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{EncodingKey, Header, encode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use wsfleet_client::Client;
use wsfleet_tests::redis::RedisServer;
use wsfleet_tests::tls::TlsFiles;

use crate::cluster::{Cluster, Fleet, wait};

const ISSUER: &str = "https://id.wsfleet.test/";
const AUDIENCE: &str = "chat-app";

/// A JWKS document of HS256 keys, `(kid, secret)` each.
fn jwks(keys: &[(&str, &str)]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, secret)| json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": b64.encode(secret)}))
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A client token for `sub`, signed with `(kid, secret)`, for `audience`.
fn client_token(sub: &str, (kid, secret): (&str, &str), audience: &str) -> String {
    let now = jiff::Timestamp::now().as_second();
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_string());
    let claims = json!({"sub": sub, "iss": ISSUER, "aud": audience, "exp": now + 3600,
                        "channels": ["news"]});
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

async fn put_secret(client: &kube::Client, ns: &str, name: &str, data: &[(&str, &[u8])]) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("writing Secret {name}: {e}"));
}

async fn secret_value(client: &kube::Client, ns: &str, name: &str, key: &str) -> Option<String> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    let bytes = secret.data?.remove(key)?;
    String::from_utf8(bytes.0).ok()
}

/// The fleet's one pod: (name, uid, address, restarts).
async fn only_pod(fleet: &Fleet) -> (String, String, std::net::IpAddr, i32) {
    let pods: Vec<Pod> = fleet.pods().await;
    assert_eq!(pods.len(), 1, "one node");
    let pod = &pods[0];
    let status = pod.status.clone().unwrap_or_default();
    let ip = status.pod_ip.expect("pod address").parse().expect("an IP");
    let restarts = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    (pod.name_any(), pod.uid().unwrap_or_default(), ip, restarts)
}

/// `POST /api/v1/publish` on the node's API port with `token`: the status.
async fn publish(ip: std::net::IpAddr, token: &str, seq: u64) -> u16 {
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        let body = json!({"channel": "news", "data": {"seq": seq}}).to_string();
        wsfleet_tests::http(
            SocketAddr::new(ip, 9091),
            "POST",
            "/api/v1/publish",
            Some(&token),
            &body,
        )
        .status
    })
    .await
    .expect("publish")
}

/// A request on the node's admin port with `token`: the status.
async fn admin(ip: std::net::IpAddr, method: &'static str, path: &'static str, token: &str) -> u16 {
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        let body = if method == "POST" {
            r#"{"window_seconds": 5}"#
        } else {
            ""
        };
        wsfleet_tests::http(SocketAddr::new(ip, 9090), method, path, Some(&token), body).status
    })
    .await
    .expect("admin call")
}

/// Whether a WebSocket upgrade with `token` gets in, and the HTTP status it got.
async fn upgrade_status(ip: std::net::IpAddr, token: &str) -> u16 {
    let path = format!("/ws?token={token}");
    tokio::task::spawn_blocking(move || {
        wsfleet_tests::raw_upgrade(SocketAddr::new(ip, 8080), &path).0
    })
    .await
    .expect("upgrade")
}

/// A JWT fleet on a TLS Redis (CA from a Secret), then: the drain and publish tokens each open
/// only their own door; a publish-token rotation reaches the node without a restart and keeps
/// the previous token for the overlap only; a new JWT key set applies without restarting the
/// node or dropping its clients; a fleet given the wrong CA is not ready and says why.
pub async fn credentials_have_one_job_each(cluster: &Cluster) {
    let tls = TlsFiles::generate("fleet");
    let redis = RedisServer::start_tls(&tls, false).expect("redis-server with TLS");
    let fleet = Fleet::create(cluster, "secured", &redis.tls_url(), json!({})).await;
    let (c, ns) = (&fleet.client, fleet.namespace.as_str());
    let ca = std::fs::read(&tls.ca_cert).expect("CA");
    put_secret(c, ns, "redis-ca", &[("ca.pem", &ca)]).await;
    put_secret(
        c,
        ns,
        "jwt-keys",
        &[("jwks.json", jwks(&[("k1", "first-secret")]).as_bytes())],
    )
    .await;
    fleet
        .apply(json!({
            "image": crate::cluster::GATEWAY_IMAGE,
            "auth": {"jwt": {"keySecretRef": {"name": "jwt-keys", "key": "jwks.json"},
                             "issuer": ISSUER, "audiences": [AUDIENCE], "leewaySeconds": 5}},
            "backplane": {"redis": {"url": redis.tls_url(),
                                    "tls": {"caSecretRef": {"name": "redis-ca", "key": "ca.pem"}}}},
            "connections": {"heartbeatIntervalSeconds": 5},
            "drain": {"reconnectWindowSeconds": 2, "timeoutSeconds": 30},
            "publishToken": {"rotationOverlapSeconds": 20},
        }))
        .await;
    assert!(
        fleet.until_serving(1, Duration::from_secs(120)).await,
        "a JWT fleet on a TLS Redis serves:\n{}",
        cluster.operator_logs().await
    );
    let (pod, uid, ip, restarts) = only_pod(&fleet).await;

    // Client tokens: iss and aud are checked, and the key is chosen by kid.
    let k1 = ("k1", "first-secret");
    let member = Client::connect(
        &format!("ws://{ip}:8080/ws"),
        Some(&client_token("alice", k1, AUDIENCE)),
    )
    .await
    .expect("a valid token gets in");
    let mut news = member.subscribe("news").await.expect("subscribed");
    assert_eq!(
        upgrade_status(ip, &client_token("bob", k1, "other-app")).await,
        401,
        "wrong aud"
    );
    assert_eq!(
        upgrade_status(ip, &client_token("bob", ("k9", "first-secret"), AUDIENCE)).await,
        401,
        "unknown kid"
    );

    // One job each: the publish token publishes (over TLS Redis, to the member), the drain token
    // does not; the publish token cannot drain.
    let drain = secret_value(c, ns, "chat-drain-token", "token")
        .await
        .expect("drain token");
    let first = secret_value(c, ns, "chat-publish-token", "token")
        .await
        .expect("publish token");
    assert_eq!(
        publish(ip, &first, 1).await,
        200,
        "the publish token publishes"
    );
    let message = tokio::time::timeout(Duration::from_secs(10), news.recv()).await;
    assert_eq!(
        message.ok().flatten().map(|m| m.data["seq"].clone()),
        Some(json!(1)),
        "delivered through the TLS Redis"
    );
    assert_eq!(
        publish(ip, &drain, 2).await,
        403,
        "the drain token cannot publish"
    );
    assert_eq!(
        admin(ip, "POST", "/drain", &first).await,
        403,
        "the publish token cannot drain"
    );
    assert_eq!(
        admin(ip, "GET", "/status", &first).await,
        200,
        "status is open to the admin port's peers"
    );

    // Rotation: the new token works, the previous one until the overlap ends, and no restart.
    fleet
        .api()
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"metadata": {"annotations": {"wsfleet.io/rotate-publish-token": "1"}}}),
            ),
        )
        .await
        .expect("asking for a rotation");
    let asked = tokio::time::Instant::now();
    let deadline = asked + Duration::from_secs(30);
    let second = loop {
        let token = secret_value(c, ns, "chat-publish-token", "token").await;
        if let Some(token) = token.filter(|t| *t != first) {
            break token;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Secret holds a new token"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let taken_up = wait(Duration::from_secs(20), || async {
        publish(ip, &second, 3).await == 200
    })
    .await;
    assert!(taken_up, "the node accepts the new token without a restart");
    let new_accepted = asked.elapsed();
    assert_eq!(
        publish(ip, &first, 4).await,
        200,
        "the previous token is accepted during the overlap"
    );
    let retired = wait(Duration::from_secs(60), || async {
        publish(ip, &first, 5).await == 401
    })
    .await;
    assert!(
        retired,
        "the previous token is refused once the overlap is over"
    );
    eprintln!(
        "publish-token rotation: new token accepted {:.1} s after the request, previous refused \
         {:.1} s after it (overlap 20 s)",
        new_accepted.as_secs_f64(),
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(publish(ip, &second, 6).await, 200);
    let events = Api::<Event>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PublishTokenRotated")),
        "the rotation is an event on the fleet"
    );

    // A new key set: k2 in, k1 out. New k2 tokens get in, new k1 tokens do not, and the member
    // connected with a k1 token stays, on the same node process.
    let mut events = member.events();
    put_secret(
        c,
        ns,
        "jwt-keys",
        &[("jwks.json", jwks(&[("k2", "second-secret")]).as_bytes())],
    )
    .await;
    let keys_changed = tokio::time::Instant::now();
    let k2 = ("k2", "second-secret");
    let applied = wait(Duration::from_secs(30), || async {
        upgrade_status(ip, &client_token("carol", k2, AUDIENCE)).await == 101
    })
    .await;
    assert!(applied, "the node picks up the new key set");
    eprintln!(
        "JWT key set: the new key admits clients {:.1} s after the Secret changed",
        keys_changed.elapsed().as_secs_f64()
    );
    assert_eq!(
        upgrade_status(ip, &client_token("dave", k1, AUDIENCE)).await,
        401,
        "a removed key is refused"
    );
    assert_eq!(publish(ip, &second, 7).await, 200);
    let mut seen = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), news.recv()).await {
        let seq = m.data["seq"].as_u64().unwrap_or_default();
        seen.push(seq);
        if seq == 7 {
            break;
        }
    }
    assert_eq!(seen.last(), Some(&7), "the member still receives: {seen:?}");
    let mut dropped = Vec::new();
    while let Ok(event) = events.try_recv() {
        if matches!(event, wsfleet_client::Event::Disconnected { .. }) {
            dropped.push(event);
        }
    }
    assert!(
        dropped.is_empty(),
        "the member was not disconnected: {dropped:?}"
    );
    assert_eq!(
        only_pod(&fleet).await,
        (pod, uid, ip, restarts),
        "the same process served throughout"
    );
    member.close();

    wrong_ca_is_not_ready_and_says_why(cluster, &redis).await;
}

/// A fleet that trusts an unrelated CA: its node never becomes ready, its status says the
/// certificate is the problem, and nothing can be published through it.
async fn wrong_ca_is_not_ready_and_says_why(cluster: &Cluster, redis: &RedisServer) {
    let other = TlsFiles::generate("unrelated");
    let client = cluster.plane.namespace("wrong-ca").await;
    let ca = std::fs::read(&other.ca_cert).expect("CA");
    put_secret(&client, "wrong-ca", "redis-ca", &[("ca.pem", &ca)]).await;
    let fleet = Fleet::create(
        cluster,
        "wrong-ca",
        &redis.tls_url(),
        json!({"backplane": {"redis": {"tls": {"caSecretRef": {"name": "redis-ca", "key": "ca.pem"}}}}}),
    )
    .await;
    let running = wait(Duration::from_secs(90), || async {
        fleet.pods().await.iter().any(|p| {
            p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    })
    .await;
    assert!(running, "the node runs:\n{}", cluster.operator_logs().await);
    let (_, _, ip, _) = only_pod(&fleet).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = tokio::task::spawn_blocking(move || {
            wsfleet_tests::http(SocketAddr::new(ip, 9090), "GET", "/status", None, "").body
        })
        .await
        .unwrap_or_default();
        if status.to_lowercase().contains("certificate") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/status names the certificate problem: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pods = fleet.pods().await;
    assert!(
        pods.iter().all(|p| !crate::cluster::ready(p)),
        "a node that cannot reach its Redis is not ready"
    );
    let token = secret_value(&fleet.client, "wrong-ca", "chat-publish-token", "token")
        .await
        .expect("publish token");
    assert_eq!(
        publish(ip, &token, 1).await,
        503,
        "nothing is published without the backplane"
    );
}
