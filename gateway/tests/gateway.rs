//! End-to-end tests of one gateway process with the in-process engine: real processes, real
//! WebSocket clients, real TCP.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsfleet_tests::{Gateway, TempDir, raw_upgrade, wait_until};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const BIN: &str = env!("CARGO_BIN_EXE_wsfleet-gateway");
/// Generous: the machine may be loaded by parallel builds.
const WAIT: Duration = Duration::from_secs(15);

fn anonymous(extra: &[&str]) -> Gateway {
    let mut args = vec!["--anonymous", "--node-id", "test-node"];
    args.extend_from_slice(extra);
    Gateway::start(BIN, &args, &[])
}

/// Connects and returns the client with its `welcome` frame.
async fn connect(url: &str) -> (Client, Value) {
    let (mut client, _) = connect_async(url).await.expect("upgrade succeeds");
    let welcome = next_json(&mut client).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    (client, welcome)
}

/// Connects with `Authorization: Bearer <token>`.
async fn connect_with_token(url: &str, token: &str) -> Result<(Client, Value), WsError> {
    let mut request = url.into_client_request()?;
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("token is ASCII");
    request.headers_mut().insert("authorization", value);
    let (mut client, _) = connect_async(request).await?;
    let welcome = next_json(&mut client).await;
    Ok((client, welcome))
}

/// The HTTP status of a refused upgrade, and its `Retry-After`.
fn refusal(result: Result<impl Sized, WsError>) -> (u16, Option<String>) {
    match result {
        Err(WsError::Http(response)) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade succeeded"),
    }
}

/// The next data frame as JSON, skipping control frames.
async fn next_json(client: &mut Client) -> Value {
    let frame = tokio::time::timeout(WAIT, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a frame arrives in time");
    serde_json::from_str(&frame).expect("server frames are JSON")
}

async fn send(client: &mut Client, frame: Value) {
    client
        .send(Message::text(frame.to_string()))
        .await
        .expect("sending a frame");
}

/// Reads until the server closes; returns the close code (None when the socket just ended).
async fn close_code(client: &mut Client) -> Option<CloseCode> {
    tokio::time::timeout(WAIT, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the server closes in time")
}

#[tokio::test]
async fn welcome_names_client_node_and_heartbeat() {
    let gateway = anonymous(&["--heartbeat-interval-secs", "7"]);
    let (mut client, welcome) = connect(&gateway.ws_url("")).await;
    assert_eq!(welcome["node"], "test-node");
    assert_eq!(welcome["heartbeat_ms"], 7000);
    assert!(
        welcome["client_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(gateway.connections(), 1);
    // A client-initiated close is answered with a close frame and releases the slot.
    client.close(None).await.expect("sending close");
    let reply = tokio::time::timeout(WAIT, client.next())
        .await
        .expect("a reply in time");
    assert!(matches!(reply, Some(Ok(Message::Close(_)))), "{reply:?}");
    assert!(wait_until(WAIT, || gateway.connections() == 0));
}

/// A client that sends a frame right behind its upgrade request, without waiting for the
/// `101` (which RFC 6455 asks it to do), still has that frame read and answered.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    let gateway = anonymous(&[]);
    let mut stream = TcpStream::connect(gateway.ws_addr).await.expect("connect");
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gateway.ws_addr
    )
    .into_bytes();
    let payload = br#"{"op":"subscribe","channel":"early","id":"r1"}"#;
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    bytes.extend_from_slice(&[0x81, 0x80 | payload.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&bytes).await.expect("write");
    // The response head, byte by byte, so no frame bytes are taken with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("response head"));
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut client =
        WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(stream), Role::Client, None).await;
    assert_eq!(next_json(&mut client).await["op"], "welcome");
    let ack = next_json(&mut client).await;
    assert_eq!(
        (ack["op"].as_str(), ack["id"].as_str()),
        (Some("ack"), Some("r1")),
        "{ack}"
    );
}

/// Requests that are not WebSocket upgrades get a status that says why, with the headers
/// RFC 9110 asks for, and a one-line reason.
#[test]
fn requests_that_are_not_upgrades_get_a_status_and_a_reason() {
    let gateway = anonymous(&[]);
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        (
            format!("POST /ws HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 13\r\n\r\n"),
            405,
            Some(("Allow", "GET")),
        ),
        (
            format!("GET /ws HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 8\r\n\r\n"),
            426,
            Some(("Sec-WebSocket-Version", "13")),
        ),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 400, None),
        (
            format!("GET /elsewhere HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 13\r\n\r\n"),
            404,
            None,
        ),
    ];
    for (request, status, header) in cases {
        let reply = wsfleet_tests::raw_http(gateway.ws_addr, &request);
        assert_eq!(reply.status, status, "{request}");
        if let Some((name, value)) = header {
            assert_eq!(reply.header(name), Some(value), "{request}");
        }
        assert_eq!(
            reply.header("Content-Length"),
            Some(reply.body.len().to_string().as_str())
        );
        assert!(
            reply.body.ends_with('\n') && reply.body.len() > 1,
            "{:?}",
            reply.body
        );
    }
    assert_eq!(
        gateway.metric("wsfleet_handshakes_total{result=\"failed\"}"),
        3.0
    );
}

#[tokio::test]
async fn publish_reaches_subscribers_with_offsets() {
    let gateway = anonymous(&[]);
    let (mut alice, _) = connect(&gateway.ws_url("")).await;
    let (mut bob, _) = connect(&gateway.ws_url("")).await;
    send(
        &mut alice,
        json!({"op": "subscribe", "channel": "room:1", "id": "s1"}),
    )
    .await;
    let ack = next_json(&mut alice).await;
    assert_eq!(
        (ack["op"].clone(), ack["id"].clone(), ack["offset"].clone()),
        (json!("ack"), json!("s1"), json!(0))
    );
    let epoch = ack["epoch"]
        .as_str()
        .expect("subscribe ack has an epoch")
        .to_owned();

    send(
        &mut bob,
        json!({"op": "publish", "channel": "room:1", "data": {"text": "hi"}, "id": "p1"}),
    )
    .await;
    let ack = next_json(&mut bob).await;
    assert_eq!(
        (ack["op"].clone(), ack["id"].clone(), ack["offset"].clone()),
        (json!("ack"), json!("p1"), json!(1))
    );
    let message = next_json(&mut alice).await;
    assert_eq!(
        message,
        json!({"op": "message", "channel": "room:1", "offset": 1, "data": {"text": "hi"}})
    );

    // Resuming from the current position recovers (nothing was missed).
    send(&mut bob, json!({"op": "subscribe", "channel": "room:1", "since": {"offset": 1, "epoch": epoch}, "id": "s2"})).await;
    let ack = next_json(&mut bob).await;
    assert_eq!(ack["recovered"], true, "{ack}");

    // After unsubscribing, alice gets nothing more; bob (still subscribed) does.
    send(
        &mut alice,
        json!({"op": "unsubscribe", "channel": "room:1", "id": "u1"}),
    )
    .await;
    assert_eq!(next_json(&mut alice).await["id"], "u1");
    send(
        &mut bob,
        json!({"op": "publish", "channel": "room:1", "data": 2}),
    )
    .await;
    assert_eq!(next_json(&mut bob).await["offset"], 2);
    send(
        &mut alice,
        json!({"op": "publish", "channel": "other", "data": 3, "id": "p2"}),
    )
    .await;
    assert_eq!(
        next_json(&mut alice).await["id"],
        "p2",
        "alice got no room:1 message after unsubscribing"
    );
}

#[tokio::test]
async fn direct_send_reaches_a_client_id() {
    let gateway = anonymous(&[]);
    let (mut alice, welcome) = connect(&gateway.ws_url("")).await;
    let alice_id = welcome["client_id"].as_str().unwrap().to_owned();
    let (mut bob, welcome) = connect(&gateway.ws_url("")).await;
    let bob_id = welcome["client_id"].as_str().unwrap().to_owned();

    send(
        &mut bob,
        json!({"op": "send", "to": alice_id, "data": [1, 2], "id": "d1"}),
    )
    .await;
    assert_eq!(next_json(&mut bob).await, json!({"op": "ack", "id": "d1"}));
    assert_eq!(
        next_json(&mut alice).await,
        json!({"op": "direct", "from": bob_id, "data": [1, 2]})
    );

    send(
        &mut bob,
        json!({"op": "send", "to": "nobody", "data": 1, "id": "d2"}),
    )
    .await;
    let error = next_json(&mut bob).await;
    assert_eq!(
        (
            error["op"].clone(),
            error["code"].clone(),
            error["id"].clone()
        ),
        (json!("error"), json!("not_found"), json!("d2"))
    );
}

#[tokio::test]
async fn malformed_input_gets_errors_and_keeps_the_connection() {
    let gateway = anonymous(&[]);
    let (mut client, _) = connect(&gateway.ws_url("")).await;
    client.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next_json(&mut client).await["code"], "bad_request");
    send(&mut client, json!({"op": "dance", "id": "x1"})).await;
    let error = next_json(&mut client).await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("unknown_op"), json!("x1"))
    );
    send(
        &mut client,
        json!({"op": "publish", "channel": "c", "id": "x2"}),
    )
    .await;
    let error = next_json(&mut client).await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("bad_request"), json!("x2"))
    );
    send(
        &mut client,
        json!({"op": "subscribe", "channel": "no spaces", "id": "x3"}),
    )
    .await;
    assert_eq!(next_json(&mut client).await["code"], "bad_request");
    client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut client).await["code"], "bad_request");
    // Still served.
    send(
        &mut client,
        json!({"op": "subscribe", "channel": "ok", "id": "x4"}),
    )
    .await;
    assert_eq!(
        next_json(&mut client).await,
        json!({"op": "ack", "id": "x4", "offset": 0, "epoch": next_epoch(&gateway).await})
    );
}

/// The memory engine's epoch, read from a fresh subscribe.
async fn next_epoch(gateway: &Gateway) -> Value {
    let (mut probe, _) = connect(&gateway.ws_url("")).await;
    send(
        &mut probe,
        json!({"op": "subscribe", "channel": "epoch-probe", "id": "e"}),
    )
    .await;
    next_json(&mut probe).await["epoch"].clone()
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let gateway = anonymous(&["--max-message-bytes", "1024"]);
    let (mut client, _) = connect(&gateway.ws_url("")).await;
    let big = json!({"op": "publish", "channel": "c", "data": "x".repeat(2000)});
    let _ = client.send(Message::text(big.to_string())).await;
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Size));
    assert!(wait_until(WAIT, || gateway.connections() == 0));
}

#[tokio::test]
async fn cap_refuses_with_503_and_readyz_turns_false() {
    let gateway = anonymous(&["--max-connections", "2"]);
    assert_eq!(gateway.admin("GET", "/readyz", None, "").status, 200);
    let (first, _) = connect(&gateway.ws_url("")).await;
    let (_second, _) = connect(&gateway.ws_url("")).await;
    let (status, retry_after) = refusal(connect_async(gateway.ws_url("")).await);
    assert_eq!(status, 503);
    assert!(retry_after.is_some_and(|v| v.parse::<u64>().is_ok()));
    assert_eq!(gateway.admin("GET", "/readyz", None, "").status, 503);
    let status: Value =
        serde_json::from_str(&gateway.admin("GET", "/status", None, "").body).unwrap();
    assert_eq!(
        (status["ready"].clone(), status["connections"].clone()),
        (json!(false), json!(2))
    );

    drop(first);
    assert!(wait_until(WAIT, || gateway
        .admin("GET", "/readyz", None, "")
        .status
        == 200));
    let (_third, _) = connect(&gateway.ws_url("")).await;
    assert!(gateway.metric("wsfleet_handshakes_total{result=\"at_capacity\"}") >= 1.0);
}

#[tokio::test]
async fn handshake_budget_refuses_with_429() {
    let gateway = anonymous(&["--handshakes-per-second", "1"]);
    let mut clients = Vec::new();
    let mut refused = None;
    for _ in 0..20 {
        match connect_async(gateway.ws_url("")).await {
            Ok((client, _)) => clients.push(client),
            Err(err) => {
                refused = Some(refusal(Err::<(), _>(err)));
                break;
            }
        }
    }
    let (status, retry_after) = refused.expect("some upgrade is refused within 20 quick attempts");
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("1"));
}

#[tokio::test]
async fn close_1013_mode_accepts_then_closes_with_a_reason() {
    let gateway = anonymous(&["--max-connections", "1", "--refusal-mode", "close-1013"]);
    let (_first, _) = connect(&gateway.ws_url("")).await;
    let (mut second, _) = connect_async(gateway.ws_url(""))
        .await
        .expect("upgrade is accepted");
    let frame = tokio::time::timeout(WAIT, second.next())
        .await
        .expect("a close arrives");
    match frame {
        Some(Ok(Message::Close(Some(close)))) => {
            assert_eq!(close.code, CloseCode::Again);
            assert!(close.reason.contains("capacity"), "{}", close.reason);
        }
        other => panic!("expected close 1013, got {other:?}"),
    }
    assert_eq!(gateway.connections(), 1);
}

fn hs256_token(secret: &str, claims: Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn in_ten_minutes() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600
}

#[tokio::test]
async fn jwt_auth_accepts_valid_and_refuses_bad_tokens() {
    let dir = TempDir::new("jwt");
    let key = dir.file("key", "top-secret\n");
    let gateway = Gateway::start(
        BIN,
        &[
            "--jwt-algorithm",
            "HS256",
            "--jwt-key-file",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let url = gateway.ws_url("");

    let good = hs256_token(
        "top-secret",
        json!({"sub": "alice", "exp": in_ten_minutes(), "channels": ["news", "room:*"]}),
    );
    let (mut alice, welcome) = connect_with_token(&url, &good)
        .await
        .expect("a valid token connects");
    assert_eq!(welcome["client_id"], "alice");
    send(
        &mut alice,
        json!({"op": "subscribe", "channel": "room:7", "id": "ok"}),
    )
    .await;
    assert_eq!(next_json(&mut alice).await["op"], "ack");
    send(
        &mut alice,
        json!({"op": "subscribe", "channel": "secret", "id": "no"}),
    )
    .await;
    let error = next_json(&mut alice).await;
    assert_eq!(
        (error["code"].clone(), error["id"].clone()),
        (json!("forbidden"), json!("no"))
    );
    send(
        &mut alice,
        json!({"op": "publish", "channel": "secret", "data": 1, "id": "no2"}),
    )
    .await;
    assert_eq!(next_json(&mut alice).await["code"], "forbidden");

    // The query parameter works too.
    let (_q, welcome) = connect(&gateway.ws_url(&format!("token={good}"))).await;
    assert_eq!(welcome["client_id"], "alice");

    let wrong_key = hs256_token(
        "not-the-secret",
        json!({"sub": "mallory", "exp": in_ten_minutes()}),
    );
    assert_eq!(refusal(connect_with_token(&url, &wrong_key).await).0, 401);
    assert_eq!(refusal(connect_async(url.as_str()).await).0, 401);
    let expired = hs256_token("top-secret", json!({"sub": "alice", "exp": 1000}));
    assert_eq!(refusal(connect_with_token(&url, &expired).await).0, 401);
    let no_sub = hs256_token("top-secret", json!({"exp": in_ten_minutes()}));
    assert_eq!(refusal(connect_with_token(&url, &no_sub).await).0, 403);
    assert!(gateway.metric("wsfleet_handshakes_total{result=\"unauthorized\"}") >= 3.0);
}

#[tokio::test]
async fn zombie_client_is_closed_within_the_heartbeat_timeout() {
    let gateway = anonymous(&[
        "--heartbeat-interval-secs",
        "1",
        "--heartbeat-timeout-secs",
        "2",
    ]);
    let (status, zombie) = raw_upgrade(gateway.ws_addr, "/ws");
    assert_eq!(status, 101);
    assert!(wait_until(WAIT, || gateway.connections() == 1));
    // The zombie never reads nor answers pings; the node must release it by itself.
    assert!(
        wait_until(WAIT, || gateway.connections() == 0),
        "zombie still counted"
    );
    assert!(gateway.metric("wsfleet_heartbeat_timeouts_total") >= 1.0);
    drop(zombie);
}

#[tokio::test]
async fn answering_pings_keeps_a_quiet_client_connected() {
    let gateway = anonymous(&[
        "--heartbeat-interval-secs",
        "1",
        "--heartbeat-timeout-secs",
        "2",
    ]);
    let (mut client, _) = connect(&gateway.ws_url("")).await;
    // Reading lets tungstenite answer the pings; stay quiet otherwise for 3 timeouts.
    let mut pings = 0;
    let quiet = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match client.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "no data frame and no close expected, got {quiet:?}"
    );
    assert!(pings >= 2, "the node pings every second, saw {pings}");
    assert_eq!(gateway.connections(), 1);
}

/// Floods `channel` from a second client with `count` frames of `size` bytes each.
async fn flood(gateway: &Gateway, channel: &str, count: usize, size: usize) {
    let (mut publisher, _) = connect(&gateway.ws_url("")).await;
    let data = "x".repeat(size);
    for n in 0..count {
        send(
            &mut publisher,
            json!({"op": "publish", "channel": channel, "data": {"n": n, "pad": data}}),
        )
        .await;
    }
    send(
        &mut publisher,
        json!({"op": "publish", "channel": "flush", "data": 0, "id": "end"}),
    )
    .await;
    loop {
        if next_json(&mut publisher).await["id"] == "end" {
            break;
        }
    }
}

#[tokio::test]
async fn slow_consumer_is_disconnected_under_the_disconnect_policy() {
    let gateway = anonymous(&[
        "--send-queue-messages",
        "4",
        "--slow-consumer-policy",
        "disconnect",
    ]);
    let (mut slow, _) = connect(&gateway.ws_url("")).await;
    send(
        &mut slow,
        json!({"op": "subscribe", "channel": "firehose", "id": "s"}),
    )
    .await;
    assert_eq!(next_json(&mut slow).await["op"], "ack");
    // 2,000 x 30 KB is far more than the socket buffers hold while `slow` does not read.
    flood(&gateway, "firehose", 2000, 30_000).await;
    assert!(wait_until(WAIT, || gateway.metric(
        "wsfleet_dropped_messages_total{reason=\"slow_consumer\"}"
    ) >= 1.0));
    assert!(
        wait_until(WAIT, || gateway.connections() == 0),
        "slow consumer still connected"
    );
    // Reading now yields what the kernel buffered, then the end of the connection.
    let code = close_code(&mut slow).await;
    assert!(matches!(code, Some(CloseCode::Policy) | None), "{code:?}");
}

#[tokio::test]
async fn slow_consumer_loses_oldest_messages_under_drop_oldest() {
    let gateway = anonymous(&[
        "--send-queue-messages",
        "4",
        "--slow-consumer-policy",
        "drop-oldest",
    ]);
    let (mut slow, _) = connect(&gateway.ws_url("")).await;
    send(
        &mut slow,
        json!({"op": "subscribe", "channel": "firehose", "id": "s"}),
    )
    .await;
    assert_eq!(next_json(&mut slow).await["op"], "ack");
    flood(&gateway, "firehose", 2000, 30_000).await;
    assert!(wait_until(WAIT, || gateway.metric(
        "wsfleet_dropped_messages_total{reason=\"drop_oldest\"}"
    ) >= 1.0));
    // Still connected, and it eventually receives the newest message; some were skipped.
    let mut received = 0;
    loop {
        let message = next_json(&mut slow).await;
        received += 1;
        if message["data"]["n"] == 1999 {
            break;
        }
    }
    assert!(received < 2000, "nothing was dropped");
    assert_eq!(gateway.connections(), 1);
}

#[tokio::test]
async fn publish_api_takes_the_publish_token_and_nothing_else() {
    let gateway = Gateway::start(
        BIN,
        &["--anonymous"],
        &[
            ("WSFLEET_PUBLISH_TOKEN", "publish-secret"),
            ("WSFLEET_DRAIN_TOKEN", "drain-secret"),
        ],
    );
    let (mut client, welcome) = connect(&gateway.ws_url("")).await;
    let client_id = welcome["client_id"].as_str().unwrap().to_owned();
    send(
        &mut client,
        json!({"op": "subscribe", "channel": "alerts", "id": "s"}),
    )
    .await;
    next_json(&mut client).await;

    let body = json!({"channel": "alerts", "data": {"level": "high"}}).to_string();
    let publish =
        |token: Option<&str>, body: &str| gateway.api("POST", "/api/v1/publish", token, body);
    assert_eq!(publish(None, &body).status, 401);
    assert_eq!(publish(Some("wrong"), &body).status, 401);
    // The operator's drain token is a valid token, for another job: 403, and it says so.
    let reply = publish(Some("drain-secret"), &body);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("drain token"), "{}", reply.body);
    // The API is not on the admin port.
    assert_eq!(
        gateway
            .admin("POST", "/api/v1/publish", Some("publish-secret"), &body)
            .status,
        404
    );
    let reply = publish(Some("publish-secret"), &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(reply["offset"], 1);
    assert_eq!(
        next_json(&mut client).await,
        json!({"op": "message", "channel": "alerts", "offset": 1, "data": {"level": "high"}})
    );
    // Nothing the refused requests carried was published: the next offset is 2.
    let reply = publish(Some("publish-secret"), &body);
    assert_eq!(
        serde_json::from_str::<Value>(&reply.body).unwrap()["offset"],
        2
    );
    next_json(&mut client).await;

    let body = json!({"to": client_id, "data": "ping"}).to_string();
    let send_api =
        |token: Option<&str>, body: &str| gateway.api("POST", "/api/v1/send", token, body);
    assert_eq!(send_api(None, &body).status, 401);
    assert_eq!(send_api(Some("drain-secret"), &body).status, 403);
    assert_eq!(send_api(Some("publish-secret"), &body).status, 200);
    assert_eq!(
        next_json(&mut client).await,
        json!({"op": "direct", "from": "server", "data": "ping"})
    );

    let missing = json!({"to": "nobody", "data": 1}).to_string();
    assert_eq!(send_api(Some("publish-secret"), &missing).status, 404);
    assert_eq!(publish(Some("publish-secret"), "{bad").status, 400);
    let bad_channel = json!({"channel": "bad name", "data": 1}).to_string();
    assert_eq!(publish(Some("publish-secret"), &bad_channel).status, 400);

    // The publish token does not drain; the drain token does.
    let drain = json!({"window_seconds": 5, "deadline_seconds": 10}).to_string();
    let reply = gateway.admin("POST", "/drain", Some("publish-secret"), &drain);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("publish token"), "{}", reply.body);
    assert_eq!(
        gateway
            .admin("POST", "/drain", Some("wrong"), &drain)
            .status,
        401
    );
    assert_eq!(
        gateway
            .admin("POST", "/drain", Some("drain-secret"), &drain)
            .status,
        202
    );
}

#[tokio::test]
async fn rotated_token_files_take_effect_without_a_restart() {
    let dir = TempDir::new("tokens");
    let publish = dir.file("publish", "first\n");
    let drain = dir.file("drain", "d1\n");
    let gateway = Gateway::start(
        BIN,
        &[
            "--anonymous",
            "--publish-token-file",
            publish.to_str().unwrap(),
            "--drain-token-file",
            drain.to_str().unwrap(),
        ],
        &[],
    );
    let body = json!({"channel": "c", "data": 1}).to_string();
    let status = |token: &str| {
        gateway
            .api("POST", "/api/v1/publish", Some(token), &body)
            .status
    };
    assert_eq!(status("first"), 200);
    // A rotation as the operator writes it: the new token first, the previous one still valid.
    std::fs::write(&publish, "second\nfirst\n").unwrap();
    assert!(wait_until(WAIT, || status("second") == 200));
    assert_eq!(status("first"), 200);
    // The next rotation retires `first`.
    std::fs::write(&publish, "third\nsecond\n").unwrap();
    assert!(wait_until(WAIT, || status("third") == 200));
    assert_eq!(status("first"), 401);
    // A file emptied mid-update keeps the tokens read before.
    std::fs::write(&publish, "").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status("third"), 200);
    let cancel = |token| gateway.admin("DELETE", "/drain", Some(token), "").status;
    assert_eq!(cancel("d2"), 401);
    std::fs::write(&drain, "d2").unwrap();
    // Authorized once the file is re-read (what it answers without a drain does not matter).
    assert!(wait_until(WAIT, || cancel("d2") != 401));
    assert_eq!(cancel("d1"), 401);
}

#[tokio::test]
async fn handshake_that_stalls_is_timed_out() {
    let gateway = anonymous(&["--handshake-timeout-secs", "1"]);
    let stalled = std::net::TcpStream::connect(gateway.ws_addr).unwrap();
    assert!(wait_until(WAIT, || gateway
        .metric("wsfleet_handshakes_total{result=\"timeout\"}")
        >= 1.0));
    drop(stalled);
}

#[test]
fn bad_config_stops_the_node_with_a_clear_message() {
    let started = std::panic::catch_unwind(|| {
        Gateway::start(BIN, &["--anonymous", "--max-connections", "0"], &[])
    });
    let panic = started
        .err()
        .expect("the gateway must refuse max_connections = 0");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("max_connections"), "{message}");
}

#[tokio::test]
async fn admin_reports_health_status_and_every_metric() {
    let gateway = anonymous(&["--max-connections", "50"]);
    let (mut client, _) = connect(&gateway.ws_url("")).await;
    send(
        &mut client,
        json!({"op": "subscribe", "channel": "m", "id": "s"}),
    )
    .await;
    next_json(&mut client).await;
    send(
        &mut client,
        json!({"op": "publish", "channel": "m", "data": 1}),
    )
    .await;
    next_json(&mut client).await;

    assert_eq!(gateway.admin("GET", "/healthz", None, "").status, 200);
    let status: Value =
        serde_json::from_str(&gateway.admin("GET", "/status", None, "").body).unwrap();
    assert_eq!(status["node"], "test-node");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["state"], "serving");
    assert_eq!(status["ready"], true);
    assert_eq!(status["connections"], 1);
    assert_eq!(status["max_connections"], 50);
    assert_eq!(status["backplane"], "memory");
    assert!(status["drain"].is_null());

    let metrics = gateway.admin("GET", "/metrics", None, "");
    assert_eq!(metrics.status, 200);
    for family in [
        "wsfleet_connections",
        "wsfleet_handshakes_total",
        "wsfleet_messages_in_total",
        "wsfleet_messages_out_total",
        "wsfleet_delivery_latency_seconds",
        "wsfleet_dropped_messages_total",
        "wsfleet_heartbeat_timeouts_total",
        "wsfleet_backplane_state",
    ] {
        assert!(
            metrics.body.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    assert_eq!(gateway.metric("wsfleet_connections"), 1.0);
    assert!(gateway.metric("wsfleet_messages_in_total") >= 2.0);
    assert!(gateway.metric("wsfleet_delivery_latency_seconds_count") >= 1.0);
    assert_eq!(
        gateway.metric("wsfleet_backplane_state{state=\"memory\"}"),
        1.0
    );
}
