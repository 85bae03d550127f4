//! What the load tool reads about gateway processes from /proc: resident memory (VmRSS) and
//! CPU time (utime + stime), sampled before and after a scenario.

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub rss_bytes: u64,
    /// User + system CPU time, in microseconds.
    pub cpu_us: u64,
}

pub fn sample(pid: u32) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the gateway pid right?)"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(Sample {
        rss_bytes: vm_rss_bytes(&status)?,
        cpu_us: cpu_ticks(&stat)? * 1_000_000 / clock_ticks_per_sec(),
    })
}

pub fn sample_all(pids: &[u32]) -> Result<Vec<Sample>> {
    pids.iter().map(|pid| sample(*pid)).collect()
}

/// The `VmRSS:   1234 kB` line of /proc/<pid>/status.
fn vm_rss_bytes(status: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()
        .context("VmRSS is not a number")?;
    Ok(kib * 1024)
}

/// utime + stime (fields 14 and 15) of /proc/<pid>/stat, in clock ticks. The command name
/// (field 2) may contain spaces, so fields are counted after its closing parenthesis.
fn cpu_ticks(stat: &str) -> Result<u64> {
    let Some(close) = stat.rfind(')') else {
        bail!("malformed stat line")
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After ")" the first field is #3 (state), so #14 is at index 11 and #15 at 12.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short stat line")?
            .parse()
            .context("stat field is not a number")
    };
    Ok(field(11)? + field(12)?)
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for unknown names.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_cpu_fields() {
        let status = "Name:\tgw\nVmPeak:\t 9000 kB\nVmRSS:\t    4096 kB\nThreads:\t2\n";
        assert_eq!(vm_rss_bytes(status).unwrap(), 4096 * 1024);
        let stat = "42 (ws gate) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 2 0 1000 1 1";
        assert_eq!(cpu_ticks(stat).unwrap(), 300);
        assert!(cpu_ticks("garbage").is_err());
        assert!(vm_rss_bytes("Name: x\n").is_err());
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
    }
}
