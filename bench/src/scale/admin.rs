//! The gateways' HTTP ports as the `scale` scenario uses them: `/status` on each admin port to
//! check each gateway has room for its share and to count its connections, and `POST
//! /api/v1/publish` on one gateway's publish API for the broadcasts.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::admin::Admin;

/// The admin APIs of every gateway of the run, in `--admin-urls` order, and the publish API
/// the broadcasts go through.
pub struct Admins {
    admins: Vec<Admin>,
    api: Admin,
}

impl Admins {
    pub fn new(bases: &[String], api: &str, token: String) -> Result<Admins> {
        let admins = bases
            .iter()
            .map(|base| Admin::new(base, None, Duration::from_secs(30)))
            .collect::<Result<_>>()?;
        let api = Admin::new(api, Some(token), Duration::from_secs(30))?;
        Ok(Admins { admins, api })
    }

    /// Each gateway's connection count, `None` where `/status` did not answer.
    pub async fn connections(&self) -> Vec<Option<u64>> {
        let mut counts = Vec::with_capacity(self.admins.len());
        for admin in &self.admins {
            counts.push(admin.connections().await.ok());
        }
        counts
    }

    /// Refuses a run that would push a gateway past its `max_connections`.
    pub async fn check_capacity(&self, per_gateway: &[usize]) -> Result<()> {
        for (admin, wanted) in self.admins.iter().zip(per_gateway) {
            let status = admin
                .status()
                .await
                .with_context(|| format!("reading {}/status", admin.base()))?;
            let (Some(max), Some(now)) = (
                status["max_connections"].as_u64(),
                status["connections"].as_u64(),
            ) else {
                bail!("{}/status has no connection counts", admin.base());
            };
            if *wanted as u64 > max.saturating_sub(now) {
                bail!(
                    "gateway {} would get {wanted} connections but has room for {} (max_connections {max}): add gateways",
                    admin.base(),
                    max.saturating_sub(now)
                );
            }
        }
        Ok(())
    }

    /// A broadcast through `POST /api/v1/publish`.
    pub async fn publish(&self, body: Value) -> Result<()> {
        self.api.post("/api/v1/publish", body).await
    }
}
