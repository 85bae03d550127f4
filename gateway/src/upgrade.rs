//! The opening handshake (RFC 6455 §4.2): reads the HTTP/1.1 request head, checks that it is
//! a WebSocket upgrade, and writes the answers: `101 Switching Protocols`, or an HTTP error
//! with a short text body. Accepting is the gateway's most frequent costly path (a drain moves
//! every client at once), so the head is parsed in place with `httparse` and only the few
//! fields admission needs are kept.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::Write as _;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest request head accepted: browsers send every cookie of the domain with the upgrade,
/// and proxies add headers of their own.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines in a request head.
const MAX_HEADERS: usize = 100;
/// What a typical upgrade request needs; the buffer grows up to [`MAX_HEAD_BYTES`].
const FIRST_READ_BYTES: usize = 2048;

/// The parts of an upgrade request that admission and the answer need.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    /// `Sec-WebSocket-Key`, from which the `101` answer is derived.
    pub key: String,
}

/// Why a request head is not a WebSocket upgrade this node takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("request head is not valid HTTP/1.1: {0}")]
    Malformed(String),
    #[error("request head is larger than {MAX_HEAD_BYTES} bytes or has too many headers")]
    TooLarge,
    #[error("only GET upgrades to WebSocket")]
    NotGet,
    #[error("not a WebSocket upgrade (needs `Connection: Upgrade` and `Upgrade: websocket`)")]
    NotUpgrade,
    #[error("unsupported WebSocket version (this server speaks 13)")]
    Version,
    #[error("missing Sec-WebSocket-Key")]
    NoKey,
    #[error("header {0} appears more than once")]
    Repeated(&'static str),
}

impl BadRequest {
    /// The HTTP answer's status line (code and reason phrase).
    pub fn status(&self) -> Status {
        match self {
            BadRequest::TooLarge => Status::HEADERS_TOO_LARGE,
            BadRequest::NotGet => Status::METHOD_NOT_ALLOWED,
            BadRequest::Version => Status::UPGRADE_REQUIRED,
            _ => Status::BAD_REQUEST,
        }
    }
}

/// An HTTP status code with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16, pub &'static str);

impl Status {
    pub const BAD_REQUEST: Status = Status(400, "Bad Request");
    pub const UNAUTHORIZED: Status = Status(401, "Unauthorized");
    pub const FORBIDDEN: Status = Status(403, "Forbidden");
    pub const NOT_FOUND: Status = Status(404, "Not Found");
    pub const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
    pub const UPGRADE_REQUIRED: Status = Status(426, "Upgrade Required");
    pub const TOO_MANY_REQUESTS: Status = Status(429, "Too Many Requests");
    pub const HEADERS_TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
    pub const SERVICE_UNAVAILABLE: Status = Status(503, "Service Unavailable");
}

/// What reading a request head came to.
#[derive(Debug)]
pub enum Read {
    /// A complete upgrade request, and any bytes the client sent after its head.
    Upgrade(Request, Vec<u8>),
    /// A complete head that is not an upgrade this node takes.
    Bad(BadRequest),
    /// The client closed (or the socket failed) before its head was complete.
    Gone,
}

/// Reads one request head from `stream`. The head is parsed only once its blank line has
/// arrived, so a client that trickles it a byte at a time costs a scan of each new byte, not
/// a parse of the whole buffer per read.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Read {
    let mut buf = Vec::with_capacity(FIRST_READ_BYTES);
    loop {
        if buf.len() >= MAX_HEAD_BYTES {
            return Read::Bad(BadRequest::TooLarge);
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(MAX_HEAD_BYTES - buf.len()));
        }
        let before = buf.len();
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Read::Gone,
            Ok(_) => {}
        }
        // The blank line may straddle two reads: look back over the last 3 old bytes.
        let fresh = &buf[before.saturating_sub(3)..];
        if !(contains(fresh, b"\r\n\r\n") || contains(fresh, b"\n\n")) {
            continue;
        }
        match parse(&buf) {
            Ok(Some((request, head_len))) => {
                return Read::Upgrade(request, buf.split_off(head_len));
            }
            Ok(None) => {}
            Err(bad) => return Read::Bad(bad),
        }
    }
}

/// Parses a request head: `Ok(None)` while it is incomplete, otherwise the request and the
/// head's length (what follows it belongs to the WebSocket stream).
pub fn parse(head: &[u8]) -> Result<Option<(Request, usize)>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if head.len() >= MAX_HEAD_BYTES => {
            return Err(BadRequest::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::TooLarge),
        Err(error) => return Err(BadRequest::Malformed(error.to_string())),
    };
    if parsed.version != Some(1) {
        return Err(BadRequest::Malformed("HTTP/1.1 is required".into()));
    }
    if parsed.method != Some("GET") {
        return Err(BadRequest::NotGet);
    }
    let target = origin_form(parsed.path.unwrap_or("/"));
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut version = None;
    let mut key = None;
    let mut authorization = None;
    for header in parsed.headers.iter() {
        let name = header.name;
        // Header values are visible ASCII in practice; anything else is ignored, as if absent.
        let Some(value) = std::str::from_utf8(header.value)
            .ok()
            .filter(|v| v.is_ascii())
        else {
            continue;
        };
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            once(&mut version, value.trim(), "Sec-WebSocket-Version")?;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            once(&mut key, value.trim(), "Sec-WebSocket-Key")?;
        } else if name.eq_ignore_ascii_case("authorization") {
            once(&mut authorization, value, "Authorization")?;
        }
    }
    if !(upgrade && connection_upgrade) {
        return Err(BadRequest::NotUpgrade);
    }
    if version != Some("13") {
        return Err(BadRequest::Version);
    }
    let key = match key {
        Some(key) if !key.is_empty() => key.to_owned(),
        _ => return Err(BadRequest::NoKey),
    };
    let request = Request {
        path: path.to_owned(),
        query,
        authorization: authorization.map(str::to_owned),
        key,
    };
    Ok(Some((request, head_len)))
}

/// Keeps the first value of a header that must appear at most once; a second is an error
/// (two keys or two credentials would make the answer depend on which one is read).
fn once<'a>(
    slot: &mut Option<&'a str>,
    value: &'a str,
    name: &'static str,
) -> Result<(), BadRequest> {
    match slot {
        Some(_) => Err(BadRequest::Repeated(name)),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// The path and query of a request target, also when a client (or a proxy) sent it in
/// absolute form (`GET http://host/ws?x HTTP/1.1`).
fn origin_form(target: &str) -> &str {
    let Some(after_scheme) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    else {
        return target;
    };
    after_scheme
        .find(['/', '?'])
        .map_or("/", |start| &after_scheme[start..])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// The `101 Switching Protocols` answer to an upgrade with this `Sec-WebSocket-Key`.
pub fn switching_protocols(key: &str) -> Bytes {
    let accept = derive_accept_key(key.as_bytes());
    let mut answer = BytesMut::with_capacity(130);
    answer.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
    answer.put_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    answer.put_slice(accept.as_bytes());
    answer.put_slice(b"\r\n\r\n");
    answer.freeze()
}

/// An HTTP error answer with a one-line text body; the connection closes after it.
pub fn refusal(status: Status, reason: &str, retry_after_secs: Option<u64>) -> Bytes {
    let Status(code, phrase) = status;
    let body_len = reason.len() + 1;
    let mut answer = String::with_capacity(160 + reason.len());
    // Writing to a String cannot fail.
    let _ = write!(
        answer,
        "HTTP/1.1 {code} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {body_len}\r\nConnection: close\r\n"
    );
    if let Some(secs) = retry_after_secs {
        let _ = write!(answer, "Retry-After: {secs}\r\n");
    }
    if status == Status::UPGRADE_REQUIRED {
        answer.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    if status == Status::METHOD_NOT_ALLOWED {
        answer.push_str("Allow: GET\r\n");
    }
    let _ = write!(answer, "\r\n{reason}\n");
    Bytes::from(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /ws?token=abc HTTP/1.1\r\nHost: example\r\n\
        Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Authorization: Bearer t0k3n\r\n\r\n";

    fn parsed(head: &str) -> Result<Option<(Request, usize)>, BadRequest> {
        parse(head.as_bytes())
    }

    #[test]
    fn an_upgrade_yields_what_admission_needs() {
        let (request, len) = parsed(UPGRADE).unwrap().unwrap();
        assert_eq!(len, UPGRADE.len());
        assert_eq!(
            request,
            Request {
                path: "/ws".into(),
                query: Some("token=abc".into()),
                authorization: Some("Bearer t0k3n".into()),
                key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
            }
        );
    }

    #[test]
    fn the_101_carries_the_rfc_accept_key() {
        // The example of RFC 6455 §1.3.
        let answer = switching_protocols("dGhlIHNhbXBsZSBub25jZQ==");
        let text = std::str::from_utf8(&answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_every_prefix_is_incomplete() {
        for end in 0..UPGRADE.len() {
            assert_eq!(parsed(&UPGRADE[..end]), Ok(None), "prefix of {end} bytes");
        }
    }

    #[test]
    fn bytes_after_the_head_are_not_part_of_it() {
        let mut head = UPGRADE.as_bytes().to_vec();
        head.extend_from_slice(&[0x81, 0x80]);
        let (_, len) = parse(&head).unwrap().unwrap();
        assert_eq!(len, UPGRADE.len());
    }

    #[test]
    fn what_is_not_an_upgrade_is_refused_with_a_reason() {
        let cases = [
            (UPGRADE.replace("GET", "POST"), BadRequest::NotGet),
            (
                UPGRADE.replace("HTTP/1.1", "HTTP/1.0"),
                BadRequest::Malformed(String::new()),
            ),
            (
                UPGRADE.replace("Upgrade: websocket", "Upgrade: h2c"),
                BadRequest::NotUpgrade,
            ),
            (
                UPGRADE.replace("keep-alive, Upgrade", "keep-alive"),
                BadRequest::NotUpgrade,
            ),
            (
                UPGRADE.replace("Version: 13", "Version: 8"),
                BadRequest::Version,
            ),
            (
                UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "X-Key: a"),
                BadRequest::NoKey,
            ),
            (
                "GET /ws HTTP/1.1\r\nHost\r\n\r\n".to_owned(),
                BadRequest::Malformed(String::new()),
            ),
        ];
        for (head, expected) in cases {
            let got = parsed(&head).expect_err(&head);
            match (&got, &expected) {
                (BadRequest::Malformed(_), BadRequest::Malformed(_)) => {}
                _ => assert_eq!(got, expected, "{head}"),
            }
        }
    }

    #[test]
    fn a_header_that_decides_the_answer_may_not_repeat() {
        for (name, value) in [
            ("Sec-WebSocket-Key", "b3RoZXI="),
            ("Sec-WebSocket-Version", "13"),
            ("Authorization", "Bearer other"),
        ] {
            let head = UPGRADE.replacen("\r\n\r\n", &format!("\r\n{name}: {value}\r\n\r\n"), 1);
            assert_eq!(parsed(&head), Err(BadRequest::Repeated(name)), "{name}");
        }
    }

    #[test]
    fn an_absolute_target_is_read_as_its_path_and_query() {
        let head = UPGRADE.replace("GET /ws?token=abc", "GET http://example:8080/ws?token=abc");
        let (request, _) = parsed(&head).unwrap().unwrap();
        assert_eq!(
            (request.path.as_str(), request.query.as_deref()),
            ("/ws", Some("token=abc"))
        );
        assert_eq!(origin_form("https://example"), "/");
        assert_eq!(origin_form("/ws"), "/ws");
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let head = "GET /ws HTTP/1.1\r\nUPGRADE: WebSocket\r\nconnection: upgrade\r\n\
            sec-websocket-version: 13\r\nsec-websocket-key: a2V5\r\n\r\n";
        let (request, _) = parsed(head).unwrap().unwrap();
        assert_eq!(request.key, "a2V5");
        assert_eq!(request.query, None);
    }

    #[test]
    fn oversized_heads_are_refused() {
        let padding = format!("X-Pad: {}\r\n", "p".repeat(MAX_HEAD_BYTES));
        let head = UPGRADE.replacen("\r\n\r\n", &format!("\r\n{padding}"), 1);
        assert_eq!(
            parse(&head.as_bytes()[..MAX_HEAD_BYTES]),
            Err(BadRequest::TooLarge)
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let head = UPGRADE.replacen("\r\n\r\n", &format!("\r\n{many}\r\n"), 1);
        assert_eq!(parsed(&head), Err(BadRequest::TooLarge));
    }

    #[test]
    fn refusals_are_complete_http_answers() {
        let answer = refusal(Status::SERVICE_UNAVAILABLE, "node is at capacity", Some(5));
        let text = std::str::from_utf8(&answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("\r\nRetry-After: 5\r\n"));
        assert!(text.contains("\r\nContent-Length: 20\r\n"));
        assert!(text.ends_with("\r\n\r\nnode is at capacity\n"));
        let answer = refusal(BadRequest::Version.status(), "unsupported", None);
        let text = std::str::from_utf8(&answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
        assert!(!text.contains("Retry-After"));
        let answer = refusal(BadRequest::NotGet.status(), "only GET", None);
        assert!(
            std::str::from_utf8(&answer)
                .unwrap()
                .contains("\r\nAllow: GET\r\n")
        );
    }

    #[tokio::test]
    async fn read_takes_a_head_sent_a_byte_at_a_time() {
        let (mut client, mut server) = tokio::io::duplex(1);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = client.write_all(UPGRADE.as_bytes()).await;
            client
        });
        match read(&mut server).await {
            Read::Upgrade(request, rest) => {
                assert_eq!(request.key, "dGhlIHNhbXBsZSBub25jZQ==");
                assert!(rest.is_empty());
            }
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn read_takes_a_head_in_pieces_and_keeps_what_follows() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(UPGRADE.as_bytes()).await.unwrap();
            client.write_all(&[0x81, 0x80]).await.unwrap();
            client
        });
        let mut got = read(&mut server).await;
        // The two trailing bytes may arrive with the head or after it was parsed.
        if let Read::Upgrade(_, rest) = &mut got
            && rest.is_empty()
        {
            let _client = writer.await.unwrap();
            let mut more = [0u8; 2];
            server.read_exact(&mut more).await.unwrap();
            rest.extend_from_slice(&more);
        }
        match got {
            Read::Upgrade(request, rest) => {
                assert_eq!(request.path, "/ws");
                assert_eq!(rest, [0x81, 0x80]);
            }
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn read_reports_a_client_gone_mid_head_and_an_endless_head() {
        let (mut client, mut server) = tokio::io::duplex(64);
        {
            use tokio::io::AsyncWriteExt;
            client.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
        }
        drop(client);
        assert!(matches!(read(&mut server).await, Read::Gone));

        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = client.write_all(b"GET /ws HTTP/1.1\r\n").await;
            loop {
                if client
                    .write_all(b"X-Pad: aaaaaaaaaaaaaaaa\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        assert!(matches!(
            read(&mut server).await,
            Read::Bad(BadRequest::TooLarge)
        ));
    }
}
