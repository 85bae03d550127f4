//! What the load tool reads about the whole machine from /proc: the kernel's socket counts and
//! socket buffer memory (`/proc/net/sockstat`), its slab memory (/proc/meminfo) and the load
//! average, recorded beside figures
//! that other work on the machine can distort.

use serde::{Deserialize, Serialize};

/// The TCP line of `/proc/net/sockstat` (plus the total socket count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sockstat {
    /// Sockets of every kind in use.
    pub sockets_used: u64,
    pub tcp_inuse: u64,
    pub tcp_orphan: u64,
    pub tcp_time_wait: u64,
    pub tcp_alloc: u64,
    /// Memory in TCP socket buffers, in pages (the unit of `net.ipv4.tcp_mem`).
    pub tcp_mem_pages: u64,
    pub tcp_mem_bytes: u64,
}

pub fn sockstat() -> Option<Sockstat> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    Some(parse_sockstat(&text, page_size()))
}

/// Kernel slab memory (`Slab:` of /proc/meminfo), where socket, file and epoll structures live:
/// its growth over a run is the kernel's per-connection cost beside the socket buffers.
pub fn slab_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_bytes(&text, "Slab")
}

fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `cat /proc/loadavg`'s first three fields, or empty when unreadable.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Reads `key value` pairs after each line's `LABEL:`; missing keys stay 0.
fn parse_sockstat(text: &str, page: u64) -> Sockstat {
    let mut stat = Sockstat::default();
    for line in text.lines() {
        let Some((label, rest)) = line.split_once(':') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let value = |key: &str| -> u64 {
            fields
                .chunks(2)
                .find(|pair| pair[0] == key)
                .and_then(|pair| pair.get(1)?.parse().ok())
                .unwrap_or(0)
        };
        match label {
            "sockets" => stat.sockets_used = value("used"),
            "TCP" => {
                stat.tcp_inuse = value("inuse");
                stat.tcp_orphan = value("orphan");
                stat.tcp_time_wait = value("tw");
                stat.tcp_alloc = value("alloc");
                stat.tcp_mem_pages = value("mem");
            }
            _ => {}
        }
    }
    stat.tcp_mem_bytes = stat.tcp_mem_pages * page;
    stat
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for unknown names.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 { page as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tcp_line() {
        let text = "sockets: used 400123\nTCP: inuse 400010 orphan 2 tw 68 alloc 400020 mem 5120\nUDP: inuse 0 mem 0\n";
        let stat = parse_sockstat(text, 4096);
        assert_eq!(stat.sockets_used, 400_123);
        assert_eq!(stat.tcp_inuse, 400_010);
        assert_eq!(stat.tcp_orphan, 2);
        assert_eq!(stat.tcp_time_wait, 68);
        assert_eq!(stat.tcp_alloc, 400_020);
        assert_eq!(stat.tcp_mem_pages, 5120);
        assert_eq!(stat.tcp_mem_bytes, 5120 * 4096);
        assert_eq!(parse_sockstat("garbage", 4096), Sockstat::default());
    }

    #[test]
    fn reads_slab_memory() {
        let text = "MemTotal:       24000000 kB\nSlab:             123456 kB\nSReclaimable:      1000 kB\n";
        assert_eq!(meminfo_bytes(text, "Slab"), Some(123_456 * 1024));
        assert_eq!(meminfo_bytes(text, "Nope"), None);
    }

    #[test]
    fn reads_this_machine() {
        assert!(sockstat().is_some());
        assert!(slab_bytes().is_some_and(|b| b > 0));
        assert_eq!(loadavg().split(' ').count(), 3);
    }
}
