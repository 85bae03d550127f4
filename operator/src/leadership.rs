//! Running a task only while this replica holds the leader lease: election rounds every third
//! of the lease duration, the task started on winning and aborted on losing, and the lease
//! released on shutdown so a standby takes over at once.

use std::future::Future;
use std::time::Instant;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::health::Health;
use crate::lease::Elector;
use crate::metrics::Metrics;

/// How long a stopping replica tries to hand the lease back.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Competes for the lease until `shutdown` resolves, running `start()` while leading.
///
/// The task stops when the lease is lost, or when renewals have failed for two thirds of the
/// lease (before any standby may take over), and is restarted if it ends on its own.
pub async fn lead_while_elected<F, Fut>(
    elector: Elector,
    metrics: Metrics,
    health: Health,
    shutdown: impl Future<Output = ()>,
    start: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let round = elector.config().duration / 3;
    let mut task: Option<JoinHandle<()>> = None;
    let mut last_renewal: Option<Instant> = None;
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(round);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let leading = match elector.try_lead(jiff::Timestamp::now()).await {
            Ok(leading) => {
                last_renewal = leading.then(Instant::now);
                leading
            }
            Err(e) => {
                warn!(error = %e, "leader election round failed");
                last_renewal.is_some_and(|t| t.elapsed() < round * 2)
            }
        };
        health.round_done();
        if task.as_ref().is_some_and(JoinHandle::is_finished) {
            warn!("the controller stopped; restarting it");
            task = None;
        }
        match (&task, leading) {
            (None, true) => {
                info!(identity = %elector.config().identity, "became leader; starting the controller");
                metrics.leader.set(1);
                task = Some(tokio::spawn(start()));
            }
            (Some(_), false) => {
                warn!("lost the leader lease; stopping the controller");
                step_down(&mut task, &metrics);
            }
            _ => {}
        }
    }
    info!("shutting down");
    step_down(&mut task, &metrics);
    // Bounded: a stopping process must not wait on an API server that does not answer (the
    // lease then simply expires).
    match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "could not release the leader lease"),
        Err(_) => warn!("the API server did not answer the lease release; it will expire"),
    }
}

fn step_down(task: &mut Option<JoinHandle<()>>, metrics: &Metrics) {
    if let Some(task) = task.take() {
        task.abort();
    }
    metrics.leader.set(0);
}
