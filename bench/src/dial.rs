//! Opening load connections: a TCP socket bound to a chosen 127.0.0.x source address (so one
//! machine can open far more than one address's ~28k ephemeral ports), then the WebSocket
//! handshake with small buffers, with every failure classified by cause.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self};

pub type Conn = WebSocketStream<TcpStream>;

/// Parses `127.0.0.2-127.0.0.9` (inclusive) or a single address into the source addresses to
/// rotate over. Only loopback addresses are accepted: the tool never targets other hosts.
pub fn parse_source_ips(spec: &str) -> Result<Vec<Ipv4Addr>> {
    let (first, last) = match spec.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (spec.trim(), spec.trim()),
    };
    let first: Ipv4Addr = first
        .parse()
        .with_context(|| format!("bad address {first:?}"))?;
    let last: Ipv4Addr = last
        .parse()
        .with_context(|| format!("bad address {last:?}"))?;
    if !first.is_loopback() || !last.is_loopback() {
        bail!("source addresses must be loopback (127.0.0.0/8), got {spec}");
    }
    let (a, b) = (u32::from(first), u32::from(last));
    if b < a {
        bail!("address range {spec} runs backwards");
    }
    if b - a >= 65_536 {
        bail!("address range {spec} is larger than 65,536 addresses");
    }
    Ok((a..=b).map(Ipv4Addr::from).collect())
}

/// The target of a load run: a `ws://` URL on loopback, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Target {
    pub fn new(url: &str, token: Option<String>) -> Result<Target> {
        let request = url
            .into_client_request()
            .with_context(|| format!("bad URL {url}"))?;
        let uri = request.uri();
        if uri.scheme_str() != Some("ws") {
            bail!("only ws:// URLs are supported, got {url}");
        }
        let host = uri.host().context("URL without host")?;
        let ip: IpAddr = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            other => other
                .parse()
                .with_context(|| format!("host {other} must be a loopback IP"))?,
        };
        if !ip.is_loopback() {
            bail!("the load tool only targets loopback; {url} is not");
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(Target {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
            token,
        })
    }

    fn request(&self) -> Result<Request<()>, tungstenite::Error> {
        let mut request = self.url.as_str().into_client_request()?;
        if let Some(token) = &self.token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            request.headers_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Why a dial failed, as reported in "failures by cause".
pub fn classify(error: &DialError) -> String {
    match error {
        DialError::Timeout => "timeout".into(),
        DialError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".into(),
        DialError::Io(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            "no_source_port".into()
        }
        DialError::Io(e) if e.raw_os_error() == Some(libc::EMFILE) => "too_many_open_files".into(),
        DialError::Io(e) => format!("io:{:?}", e.kind()),
        DialError::Ws(tungstenite::Error::Http(response)) => {
            format!("http_{}", response.status().as_u16())
        }
        DialError::Ws(tungstenite::Error::Io(e))
            if e.kind() == std::io::ErrorKind::ConnectionReset =>
        {
            "reset".into()
        }
        DialError::Ws(tungstenite::Error::Io(e)) => format!("io:{:?}", e.kind()),
        DialError::Ws(tungstenite::Error::Protocol(_)) => "ws_protocol".into(),
        DialError::Ws(_) => "ws_other".into(),
        DialError::Session(cause) => (*cause).into(),
    }
}

#[derive(Debug)]
pub enum DialError {
    Timeout,
    Io(std::io::Error),
    Ws(tungstenite::Error),
    /// The WebSocket opened but the peer protocol's own set-up failed (e.g. Socket.IO's
    /// namespace connect), with a short cause.
    Session(&'static str),
}

/// Small buffers: the load side holds tens of thousands of mostly idle connections.
fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
}

/// Connects from `source` (port chosen by the kernel) and performs the handshake, all within
/// `timeout`.
pub async fn dial(
    target: &Target,
    source: Option<Ipv4Addr>,
    timeout: Duration,
) -> Result<Conn, DialError> {
    let attempt = async {
        let socket = TcpSocket::new_v4().map_err(DialError::Io)?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(IpAddr::V4(ip), 0))
                .map_err(DialError::Io)?;
        }
        let stream = socket.connect(target.addr).await.map_err(DialError::Io)?;
        let _ = stream.set_nodelay(true);
        let request = target.request().map_err(DialError::Ws)?;
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(small_buffers()))
                .await
                .map_err(DialError::Ws)?;
        Ok(ws)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_ranges() {
        let ips = parse_source_ips("127.0.0.2-127.0.0.9").unwrap();
        assert_eq!(ips.len(), 8);
        assert_eq!(ips[0], Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(ips[7], Ipv4Addr::new(127, 0, 0, 9));
        assert_eq!(parse_source_ips("127.0.0.5").unwrap().len(), 1);
        assert!(parse_source_ips("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_source_ips("10.0.0.1-10.0.0.2").is_err());
        assert!(parse_source_ips("nonsense").is_err());
    }

    #[test]
    fn targets_are_loopback_ws_urls() {
        let t = Target::new("ws://127.0.0.1:8080/ws", None).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(Target::new("ws://localhost:1/ws", None).is_ok());
        assert!(Target::new("ws://10.1.2.3:8080/ws", None).is_err());
        assert!(Target::new("wss://127.0.0.1/ws", None).is_err());
        assert!(Target::new("ws://example.com/ws", None).is_err());
    }

    #[tokio::test]
    async fn refused_and_http_failures_are_classified() {
        // A port nobody listens on: refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = Target::new(&format!("ws://127.0.0.1:{port}/ws"), None).unwrap();
        let err = dial(&target, None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(classify(&err), "refused");

        // A server that answers the upgrade with 503.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n").await;
            }
        });
        let target = Target::new(&format!("ws://127.0.0.1:{port}/ws"), None).unwrap();
        let err = dial(
            &target,
            Some(Ipv4Addr::new(127, 0, 0, 3)),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(classify(&err), "http_503");
    }
}
