//! `floor`: the least a server can spend accepting a WebSocket connection on this machine. A
//! bare epoll loop (no async runtime, no allocation per connection) accepts, reads the
//! upgrade request, answers `101` and one welcome-sized frame in one write, and holds the
//! socket. Measured with `idle --gateway-pid <its pid>`, its CPU per accepted connection is
//! the kernel's share (accept, epoll, the loopback TCP work charged to the sender), the floor
//! under any server's figure. It is a measuring stick, not a WebSocket server: it sends
//! nothing else and ignores what clients send after the upgrade.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

#[derive(Args)]
pub struct FloorArgs {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub max_secs: u64,
    /// Most connections held at once; later ones are closed at once.
    #[arg(long, default_value_t = 19_000)]
    pub max_connections: usize,
}

/// A welcome-sized text frame, as the gateway sends after its 101.
const WELCOME: &[u8] =
    br#"{"op":"welcome","client_id":"anon-0123456789abcdef","node":"floor","heartbeat_ms":30000}"#;

pub fn run(args: FloorArgs) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("--listen must be a loopback address");
    }
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    listener.set_nonblocking(true)?;
    println!(
        "floor listening on {} (pid {})",
        args.listen,
        std::process::id()
    );
    let epoll = Epoll::new()?;
    let listen_fd = listener.as_raw_fd();
    epoll.add(listen_fd, libc::EPOLLIN as u32)?;
    let mut held: HashMap<RawFd, OwnedFd> = HashMap::with_capacity(args.max_connections);
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    while Instant::now() < deadline {
        for fd in epoll.wait(1000)? {
            if fd == listen_fd {
                while let Some(conn) = accept(listen_fd) {
                    if held.len() >= args.max_connections {
                        continue;
                    }
                    let raw = conn.as_raw_fd();
                    if epoll
                        .add(raw, (libc::EPOLLIN | libc::EPOLLET) as u32)
                        .is_ok()
                    {
                        held.insert(raw, conn);
                    }
                }
            } else if !answer(fd, &mut buf) {
                held.remove(&fd);
            }
        }
    }
    Ok(())
}

/// Reads an upgrade request and answers it; false when the connection should be closed.
fn answer(fd: RawFd, buf: &mut [u8]) -> bool {
    // SAFETY: `buf` is valid for `buf.len()` bytes and `fd` is an open socket we hold.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return n < 0; // 0: the client closed; <0: nothing to read right now
    }
    let request = &buf[..n as usize];
    let Some(key) = header(request, b"sec-websocket-key") else {
        return true;
    };
    let accept = derive_accept_key(key);
    let parts: [&[u8]; 5] = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        accept.as_bytes(),
        b"\r\n\r\n",
        &[0x81, WELCOME.len() as u8],
        WELCOME,
    ];
    let mut out = [0u8; 512];
    let mut len = 0;
    for part in parts {
        out[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    // SAFETY: `out` is valid for `len` bytes and `fd` is an open socket we hold.
    unsafe { libc::write(fd, out.as_ptr().cast(), len) };
    true
}

/// The value of a header line of `request` (name matched case-insensitively).
fn header<'a>(request: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    request.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

fn accept(listen_fd: RawFd) -> Option<OwnedFd> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: null address pointers are allowed; the returned descriptor is ours to own.
    let fd = unsafe { libc::accept4(listen_fd, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
    // SAFETY: a non-negative result is a new descriptor nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> Result<Epoll> {
        // SAFETY: plain syscall; a non-negative result is a descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            bail!("epoll_create1: {}", std::io::Error::last_os_error());
        }
        // SAFETY: see above.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: RawFd, events: u32) -> Result<()> {
        let mut event = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: both descriptors are open and `event` outlives the call.
        let rc =
            unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Descriptors that became ready within `timeout_ms`.
    fn wait(&self, timeout_ms: i32) -> Result<Vec<RawFd>> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: `events` is valid for 256 entries.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), 256, timeout_ms) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            bail!("epoll_wait: {error}");
        }
        Ok(events[..n as usize]
            .iter()
            .map(|e| e.u64 as RawFd)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_by_name_in_any_case() {
        let request = b"GET /ws HTTP/1.1\r\nSec-WebSocket-Key: abc==\r\nHost: x\r\n\r\n";
        assert_eq!(header(request, b"sec-websocket-key"), Some(&b"abc=="[..]));
        assert_eq!(header(request, b"upgrade"), None);
    }
}
