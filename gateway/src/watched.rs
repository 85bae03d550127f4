//! Files the node re-reads while it runs (token files, the JWT key set), so that rotating a
//! mounted Secret needs no restart. Kubernetes updates a Secret volume by swapping a symlink,
//! so reading the path again is enough; polling a few small files costs nothing measurable.

use std::path::PathBuf;
use std::time::Duration;

/// How often watched files are read again. A Secret volume update lands within the kubelet's
/// sync period (about a minute); this adds at most a few seconds to it.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Every [`RELOAD_INTERVAL`] until the process ends: reads `path`, parses it with `parse` and
/// hands the result to `apply`. A file that turns unreadable or invalid keeps what was applied
/// before (a half-written update must not lock anyone out), with one warning per new problem.
pub fn reload_forever<T: Send + 'static>(
    what: &'static str,
    path: PathBuf,
    parse: impl Fn(&str) -> anyhow::Result<T> + Send + 'static,
    apply: impl Fn(T) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_problem = None;
        loop {
            ticks.tick().await;
            let read = std::fs::read_to_string(&path)
                .map_err(anyhow::Error::from)
                .and_then(|text| parse(&text));
            match read {
                Ok(value) => {
                    last_problem = None;
                    apply(value);
                }
                Err(err) => {
                    let problem = format!("{err:#}");
                    if last_problem.as_ref() != Some(&problem) {
                        tracing::warn!(what, path = %path.display(), %problem,
                            "file unusable; keeping what was read before");
                        last_problem = Some(problem);
                    }
                }
            }
        }
    });
}
