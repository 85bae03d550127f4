//! The gateways' admin APIs as the `scale` scenario uses them: `/status` to check each
//! gateway has room for its share and to count its connections, and `POST /api/v1/publish` on
//! the first one for the broadcasts.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The gateways' admin APIs, over plain HTTP on loopback.
pub struct Admin {
    agent: ureq::Agent,
    bases: Vec<String>,
    token: String,
}

impl Admin {
    pub fn new(bases: &[String], token: String) -> Result<Admin> {
        for base in bases {
            if !(base.starts_with("http://127.") || base.starts_with("http://localhost")) {
                bail!("admin URLs must be http:// on loopback, got {base}");
            }
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Admin {
            agent,
            bases: bases
                .iter()
                .map(|b| b.trim_end_matches('/').to_owned())
                .collect(),
            token,
        })
    }

    async fn status(&self, index: usize) -> Result<Value> {
        let (agent, url) = (self.agent.clone(), format!("{}/status", self.bases[index]));
        tokio::task::spawn_blocking(move || -> Result<Value> {
            let mut reply = agent.get(&url).call()?;
            Ok(reply.body_mut().read_json()?)
        })
        .await?
    }

    /// Each gateway's connection count, `None` where `/status` did not answer.
    pub async fn connections(&self) -> Vec<Option<u64>> {
        let mut counts = Vec::with_capacity(self.bases.len());
        for index in 0..self.bases.len() {
            let status = self.status(index).await.ok();
            counts.push(status.and_then(|s| s["connections"].as_u64()));
        }
        counts
    }

    /// Refuses a run that would push a gateway past its `max_connections`.
    pub async fn check_capacity(&self, per_gateway: &[usize]) -> Result<()> {
        for (index, wanted) in per_gateway.iter().enumerate() {
            let status = self
                .status(index)
                .await
                .with_context(|| format!("reading {}/status", self.bases[index]))?;
            let (Some(max), Some(now)) = (
                status["max_connections"].as_u64(),
                status["connections"].as_u64(),
            ) else {
                bail!("{}/status has no connection counts", self.bases[index]);
            };
            if *wanted as u64 > max.saturating_sub(now) {
                bail!(
                    "gateway {} would get {wanted} connections but has room for {} (max_connections {max}): add gateways",
                    self.bases[index],
                    max.saturating_sub(now)
                );
            }
        }
        Ok(())
    }

    pub async fn publish(&self, body: Value) -> Result<()> {
        let (agent, token) = (self.agent.clone(), self.token.clone());
        let url = format!("{}/api/v1/publish", self.bases[0]);
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut reply = agent
                .post(&url)
                .header("Authorization", format!("Bearer {token}"))
                .send_json(&body)?;
            let status = reply.status().as_u16();
            if status != 200 {
                let text = reply.body_mut().read_to_string().unwrap_or_default();
                bail!("POST {url} answered {status}: {text}");
            }
            Ok(())
        })
        .await?
    }
}
