//! A gateway's admin API as the load tool uses it, over plain HTTP on loopback: `GET /status`
//! and token-protected POSTs (`/drain`, `/api/v1/publish`). Calls are blocking (ureq) and run
//! on tokio's blocking pool.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub struct Admin {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Admin {
    /// `base` is `http://127.x.x.x:PORT` (or `localhost`); only loopback is accepted.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Admin> {
        let host = base
            .strip_prefix("http://")
            .and_then(|rest| rest.split([':', '/']).next())
            .with_context(|| format!("admin URL {base} must be http://"))?;
        if !(host == "localhost" || host.starts_with("127.")) {
            bail!("the load tool only targets loopback; {base} is not");
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Ok(Admin {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn status(&self) -> Result<Value> {
        let (agent, url) = (self.agent.clone(), format!("{}/status", self.base));
        tokio::task::spawn_blocking(move || -> Result<Value> {
            let mut reply = agent.get(&url).call()?;
            Ok(reply.body_mut().read_json()?)
        })
        .await?
    }

    pub async fn node(&self) -> Result<String> {
        let status = self.status().await?;
        status["node"]
            .as_str()
            .map(str::to_owned)
            .context("/status has no node id")
    }

    pub async fn connections(&self) -> Result<u64> {
        self.status().await?["connections"]
            .as_u64()
            .context("/status has no connection count")
    }

    /// POSTs `body` to `path` with the admin token; any answer but 200/202 is an error.
    pub async fn post(&self, path: &str, body: Value) -> Result<()> {
        let token = self
            .token
            .clone()
            .context("this call needs a token (--drain-token / WSFLEET_DRAIN_TOKEN for /drain, --publish-token / WSFLEET_PUBLISH_TOKEN for the publish API)")?;
        let (agent, url) = (self.agent.clone(), format!("{}{path}", self.base));
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut reply = agent
                .post(&url)
                .header("Authorization", format!("Bearer {token}"))
                .send_json(&body)?;
            let status = reply.status().as_u16();
            if !matches!(status, 200 | 202) {
                let text = reply.body_mut().read_to_string().unwrap_or_default();
                bail!("POST {url} answered {status}: {text}");
            }
            Ok(())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_is_accepted() {
        let ok = |base: &str| Admin::new(base, None, Duration::from_secs(1)).is_ok();
        assert!(ok("http://127.0.0.1:9090"));
        assert!(ok("http://127.0.0.12:9090/"));
        assert!(ok("http://localhost:9090"));
        assert!(!ok("http://10.0.0.1:9090"));
        assert!(!ok("https://127.0.0.1:9090"));
        assert!(!ok("127.0.0.1:9090"));
    }
}
