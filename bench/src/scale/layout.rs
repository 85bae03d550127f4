//! How the `scale` scenario lays its connections out: contiguous shares of the connection
//! numbers per load process, each with its own disjoint slice of source addresses, and
//! connection number `g` on gateway `g % K`, so every gateway gets the same count (±1) whatever
//! the number of processes.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};

/// What one load process opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Number of the process's first connection, over all processes.
    pub first: usize,
    pub count: usize,
    /// Concurrent dialers in this process.
    pub concurrency: usize,
    /// The process's source addresses, as an inclusive range.
    pub sources: (Ipv4Addr, Ipv4Addr),
}

impl Share {
    /// Source address spec for the child's `--source-ips`.
    pub fn source_spec(&self) -> String {
        format!("{}-{}", self.sources.0, self.sources.1)
    }

    /// Connections from the busiest source address of this share: each address has only the
    /// ephemeral port range to bind from.
    pub fn per_source(&self) -> usize {
        let (a, b) = (u32::from(self.sources.0), u32::from(self.sources.1));
        let addresses = (b - a) as usize + 1;
        self.count.div_ceil(addresses)
    }
}

/// Splits `n` connections and `concurrency` dialers over `procs` processes, giving each a
/// disjoint slice of `sources` (so no two processes compete for one address's ports).
pub fn plan(
    n: usize,
    procs: usize,
    concurrency: usize,
    sources: &[Ipv4Addr],
) -> Result<Vec<Share>> {
    if n == 0 || procs == 0 || concurrency == 0 {
        bail!("-n, -c and --procs must be at least 1");
    }
    if sources.len() < procs {
        bail!(
            "{} source addresses cannot be split over {procs} load processes: give at least one each",
            sources.len()
        );
    }
    let per_sources = sources.len() / procs;
    let mut first = 0;
    let shares = (0..procs)
        .map(|i| {
            let count = n / procs + usize::from(i < n % procs);
            let low = i * per_sources;
            // The last process also takes the addresses the division left over.
            let high = if i + 1 == procs {
                sources.len() - 1
            } else {
                low + per_sources - 1
            };
            let share = Share {
                first,
                count,
                concurrency: (concurrency / procs).max(1),
                sources: (sources[low], sources[high]),
            };
            first += count;
            share
        })
        .collect();
    Ok(shares)
}

/// The gateway (index into the URLs) that connection number `global` goes to.
pub fn gateway_of(global: usize, gateways: usize) -> usize {
    global % gateways.max(1)
}

/// How many of `n` connections each of `gateways` gateways receives.
pub fn per_gateway(n: usize, gateways: usize) -> Vec<usize> {
    (0..gateways)
        .map(|k| n / gateways + usize::from(k < n % gateways))
        .collect()
}

/// Ephemeral ports per source address, from `/proc/sys/net/ipv4/ip_local_port_range`
/// (`first last`). A socket bound to an address before `connect` holds its port for every
/// destination, so this bounds the connections per source address.
pub fn ephemeral_ports(range: &str) -> Option<usize> {
    let mut bounds = range.split_whitespace().map(str::parse::<usize>);
    let (Some(Ok(first)), Some(Ok(last))) = (bounds.next(), bounds.next()) else {
        return None;
    };
    (last >= first).then(|| last - first + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::parse_source_ips;

    #[test]
    fn shares_cover_every_connection_once() {
        let sources = parse_source_ips("127.0.1.1-127.0.1.240").unwrap();
        let shares = plan(200_001, 12, 512, &sources).unwrap();
        assert_eq!(shares.len(), 12);
        assert_eq!(shares.iter().map(|s| s.count).sum::<usize>(), 200_001);
        let mut next = 0;
        for share in &shares {
            assert_eq!(share.first, next);
            next += share.count;
            assert_eq!(share.concurrency, 42);
        }
        assert_eq!(shares[0].count, 16_667);
        assert_eq!(shares[11].count, 16_666);
    }

    #[test]
    fn source_slices_are_disjoint_and_use_every_address() {
        let sources = parse_source_ips("127.0.1.1-127.0.1.10").unwrap();
        let shares = plan(1000, 3, 3, &sources).unwrap();
        assert_eq!(shares[0].source_spec(), "127.0.1.1-127.0.1.3");
        assert_eq!(shares[1].source_spec(), "127.0.1.4-127.0.1.6");
        // The remainder goes to the last process.
        assert_eq!(shares[2].source_spec(), "127.0.1.7-127.0.1.10");
        assert_eq!(shares[0].per_source(), 112);
        assert_eq!(shares[2].per_source(), 84);
    }

    #[test]
    fn bad_plans_are_refused() {
        let two = parse_source_ips("127.0.1.1-127.0.1.2").unwrap();
        assert!(plan(10, 3, 8, &two).is_err());
        assert!(plan(0, 1, 8, &two).is_err());
        assert!(plan(10, 0, 8, &two).is_err());
        assert!(plan(10, 1, 0, &two).is_err());
        // Fewer dialers than processes still gives each process one.
        assert_eq!(plan(10, 2, 1, &two).unwrap()[1].concurrency, 1);
    }

    #[test]
    fn gateways_get_even_counts_whatever_the_process_split() {
        let sources = parse_source_ips("127.0.1.1-127.0.1.12").unwrap();
        let (n, gateways) = (200_000, 11);
        let mut counted = vec![0; gateways];
        for share in plan(n, 12, 512, &sources).unwrap() {
            for global in share.first..share.first + share.count {
                counted[gateway_of(global, gateways)] += 1;
            }
        }
        assert_eq!(counted, per_gateway(n, gateways));
        let (min, max) = (counted.iter().min(), counted.iter().max());
        assert_eq!((min, max), (Some(&18_181), Some(&18_182)));
        assert_eq!(per_gateway(n, gateways).iter().sum::<usize>(), n);
    }

    #[test]
    fn port_range_parsing() {
        assert_eq!(ephemeral_ports("32768\t60999\n"), Some(28_232));
        assert_eq!(ephemeral_ports("1024 1024"), Some(1));
        assert_eq!(ephemeral_ports("60999 32768"), None);
        assert_eq!(ephemeral_ports("nonsense"), None);
    }
}
