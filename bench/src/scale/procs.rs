//! The load processes of the `scale` scenario, seen from the parent: started as children of
//! this same binary with their share on the command line, told commands on stdin, heard as
//! JSON reports on stdout (one reader thread each), and killed if still running when dropped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;

use super::{ScaleArgs, child, layout};

/// A child's line, as its reader thread saw it.
enum Line {
    Report(child::Report),
    Garbled(String),
    Ended,
}

/// The load processes. Dropping this kills any that are still running.
pub struct Children {
    procs: Vec<Child>,
    lines: mpsc::UnboundedReceiver<(usize, Line)>,
}

impl Children {
    pub fn spawn(args: &ScaleArgs, shares: &[layout::Share]) -> Result<Children> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let (tx, lines) = mpsc::unbounded_channel();
        let mut children = Children {
            procs: Vec::with_capacity(shares.len()),
            lines,
        };
        for (index, share) in shares.iter().enumerate() {
            let mut command = Command::new(&exe);
            command
                .args(["scale", "--child", "--urls", &args.urls.join(",")])
                .args(["-n", &share.count.to_string()])
                .args(["-c", &share.concurrency.to_string()])
                .args(["--first", &share.first.to_string()])
                .args(["--source-ips", &share.source_spec()])
                .args(["--channel", &args.channel])
                .args(["--broadcasts", &args.broadcasts.to_string()])
                .args([
                    "--broadcast-timeout-secs",
                    &args.broadcast_timeout_secs.to_string(),
                ])
                .args([
                    "--handshake-timeout-secs",
                    &args.handshake_timeout_secs.to_string(),
                ])
                .args(["--max-secs", &args.max_secs.to_string()])
                .env_remove("WSFLEET_PUBLISH_TOKEN")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(token) = &args.token {
                command.args(["--token", token]);
            }
            // On error, dropping `children` kills the ones already started. The children's
            // parent-death signal follows the spawning thread: this runs on the main thread
            // (`#[tokio::main]` polls the top-level future there), which lives until exit.
            let mut child = command.spawn().context("starting a load process")?;
            let stdout = child.stdout.take().context("load process stdout")?;
            children.procs.push(child);
            let tx = tx.clone();
            std::thread::spawn(move || forward_lines(index, stdout, tx));
        }
        Ok(children)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Child::id).collect()
    }

    /// Sends a command line to every child.
    pub fn tell(&mut self, line: &str) -> Result<()> {
        for (index, child) in self.procs.iter_mut().enumerate() {
            let stdin = child.stdin.as_mut().context("load process stdin")?;
            writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .with_context(|| format!("telling load process {index}"))?;
        }
        Ok(())
    }

    /// Waits, at most `limit`, for one report of the kind `pick` accepts from every child.
    pub async fn gather<T>(
        &mut self,
        limit: Duration,
        pick: impl Fn(child::Report) -> Option<T>,
    ) -> Result<Vec<T>> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut slots: Vec<Option<T>> = (0..self.procs.len()).map(|_| None).collect();
        while slots.iter().any(Option::is_none) {
            let Ok(Some((index, line))) =
                tokio::time::timeout_at(deadline, self.lines.recv()).await
            else {
                let missing: Vec<usize> =
                    (0..slots.len()).filter(|i| slots[*i].is_none()).collect();
                bail!("load processes {missing:?} did not report within {limit:?}");
            };
            match line {
                Line::Report(report) => {
                    if let Some(value) = pick(report) {
                        slots[index] = Some(value);
                    }
                }
                Line::Garbled(text) => bail!("load process {index} printed {text:?}"),
                // A child that already gave this report may exit (its closing report is last).
                Line::Ended if slots[index].is_some() => {}
                Line::Ended => bail!("load process {index} exited early (see its stderr)"),
            }
        }
        Ok(slots.into_iter().flatten().collect())
    }

    /// Closes the children's stdin (their signal to release and exit), collects their closing
    /// reports (those that arrive within 30 s) and waits up to 10 s for them to exit; the rest
    /// are killed on drop.
    pub async fn release(mut self) -> Vec<child::Closing> {
        for child in &mut self.procs {
            drop(child.stdin.take());
        }
        let closings = self
            .gather(Duration::from_secs(30), |r| match r {
                child::Report::Closing(c) => Some(c),
                _ => None,
            })
            .await
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && self
                .procs
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(None)))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closings
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.procs {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Reads a child's stdout, a JSON report per line, until it closes.
fn forward_lines(
    index: usize,
    stdout: std::process::ChildStdout,
    tx: mpsc::UnboundedSender<(usize, Line)>,
) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let parsed = match serde_json::from_str(&line) {
            Ok(report) => Line::Report(report),
            Err(_) => Line::Garbled(line),
        };
        if tx.send((index, parsed)).is_err() {
            return;
        }
    }
    let _ = tx.send((index, Line::Ended));
}
