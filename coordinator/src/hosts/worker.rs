//! The background loop of host runs: release held hosts as the rollout
//! allows, and review finished composition checks into the ledger.

use std::time::Duration;

use fleet_common::lease::LeaseClient;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::review::review_compose_runs;
use super::rollout::{release, runs_with_held_hosts};
use crate::error::CoordinatorError;

/// Hosts finish in seconds to minutes; half a second keeps a rollout from
/// idling between them without loading Postgres.
const TICK: Duration = Duration::from_millis(500);

pub struct HostWorker {
    pub pool: PgPool,
    pub leases: LeaseClient,
}

impl HostWorker {
    /// Ticks until `stop`; a failed tick is logged and retried next time.
    pub async fn run(self, stop: CancellationToken) -> Result<(), CoordinatorError> {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "host runs: tick failed; retrying");
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn tick(&self) -> Result<(), CoordinatorError> {
        for run in runs_with_held_hosts(&self.pool).await? {
            release(&self.pool, &self.leases, run).await?;
        }
        review_compose_runs(&self.pool).await?;
        Ok(())
    }
}
