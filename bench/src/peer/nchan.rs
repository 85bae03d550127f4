//! The nginx + Nchan peer: subscribers open a WebSocket to `<node>/sub/<channel>` and receive
//! each published body as one text frame; the publisher POSTs bodies to `<node>/pub/<channel>`
//! over HTTP (the locations of bench/peers/nchan/nginx.conf.in).

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::oneshot;

/// Longest a single publish POST may take before it counts as not acknowledged.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a channel against what the nginx locations accept (`[A-Za-z0-9:._/-]+`).
pub fn check_channel(channel: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":._/-".contains(c);
    if channel.is_empty() || !channel.chars().all(allowed) {
        bail!("channel {channel:?} is not usable in an Nchan location (use [A-Za-z0-9:._/-])");
    }
    Ok(())
}

/// `ws://host:port` + channel → the subscriber WebSocket URL.
pub fn subscriber_url(base: &str, channel: &str) -> String {
    format!("{}/sub/{channel}", base.trim_end_matches('/'))
}

/// `ws://host:port` + channel → the publisher's HTTP URL.
pub fn publisher_url(base: &str, channel: &str) -> Result<String> {
    let Some(authority) = base.trim_end_matches('/').strip_prefix("ws://") else {
        bail!("Nchan node URLs are ws://host:port, got {base}");
    };
    if authority.contains('/') {
        bail!("give the Nchan node as ws://host:port without a path, got {base}");
    }
    Ok(format!("http://{authority}/pub/{channel}"))
}

/// Publishes over one keep-alive HTTP connection from a thread of its own, one POST at a time,
/// so messages reach Nchan in sequence order (concurrent POSTs could overtake each other).
pub struct Publisher {
    queue: mpsc::Sender<(String, oneshot::Sender<bool>)>,
}

impl Publisher {
    pub fn new(url: String) -> Publisher {
        let (queue, requests) = mpsc::channel::<(String, oneshot::Sender<bool>)>();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(PUBLISH_TIMEOUT))
            .build()
            .into();
        // Ends when the last sender is dropped, i.e. when the publisher is.
        std::thread::spawn(move || {
            for (body, acked) in requests {
                let ok = agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(body.as_str())
                    .is_ok();
                let _ = acked.send(ok);
            }
        });
        Publisher { queue }
    }

    /// Queues one message; resolves to whether Nchan accepted it (a 2xx answer).
    pub fn publish(&self, body: String) -> impl Future<Output = bool> + use<> {
        let (acked, ack) = oneshot::channel();
        let queued = self.queue.send((body, acked)).is_ok();
        async move { queued && ack.await.unwrap_or(false) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            subscriber_url("ws://127.0.0.1:8090/", "bench.fleet"),
            "ws://127.0.0.1:8090/sub/bench.fleet"
        );
        assert_eq!(
            publisher_url("ws://127.0.0.1:8090", "bench.fleet").unwrap(),
            "http://127.0.0.1:8090/pub/bench.fleet"
        );
        assert!(publisher_url("http://127.0.0.1:8090", "c").is_err());
        assert!(publisher_url("ws://127.0.0.1:8090/sub", "c").is_err());
    }

    #[test]
    fn channels() {
        assert!(check_channel("bench.fleet:a/b-c_d").is_ok());
        assert!(check_channel("").is_err());
        assert!(check_channel("a b").is_err());
        assert!(check_channel("a?b").is_err());
    }
}
