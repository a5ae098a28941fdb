//! The background loop of host runs: release held hosts as the rollout
//! allows, check `main`'s bundle after each learning run's dream stage
//! (DESIGN H3), and review finished composition checks into the ledger.

use std::path::PathBuf;
use std::time::Duration;

use fleet_common::lease::LeaseClient;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::review::review_compose_runs;
use super::rollout::{release, runs_with_held_hosts};
use super::submit::{submit_and_release, HostRun};
use crate::error::CoordinatorError;
use crate::metrics::{Metrics, HARDEN_RESULTS};
use crate::packs::SkillPacks;

/// Hosts finish in seconds to minutes; half a second keeps a rollout from
/// idling between them without loading Postgres.
const TICK: Duration = Duration::from_millis(500);

pub struct HostWorker {
    pub pool: PgPool,
    pub leases: LeaseClient,
    pub packs: SkillPacks,
    pub knowledge_dir: PathBuf,
    pub metrics: Metrics,
    /// Check `main`'s bundle after each learning run's dream stage.
    pub compose_after_dreams: bool,
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
        if self.compose_after_dreams {
            self.compose_after_dreams().await?;
        }
        review_compose_runs(&self.pool).await?;
        self.publish_gauges().await
    }

    /// Hosts of the latest harden run by result; the latest composition
    /// check's figures.
    async fn publish_gauges(&self) -> Result<(), CoordinatorError> {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT CASE WHEN w.state = 'pending' THEN 'pending'
                         WHEN w.reason = $1 THEN $1 ELSE w.outcome END, count(*)
             FROM work_items w
             WHERE w.run_id = (SELECT max(id) FROM runs WHERE kind = 'harden')
             GROUP BY 1",
        )
        .bind(super::NOT_STARTED)
        .fetch_all(&self.pool)
        .await?;
        for result in HARDEN_RESULTS {
            let n = counts
                .iter()
                .find(|(r, _)| r == result)
                .map_or(0, |(_, n)| *n);
            self.metrics
                .harden_hosts
                .with_label_values(&[result])
                .set(n);
        }
        let latest: Option<i64> = sqlx::query_scalar(
            "SELECT max(id) FROM runs WHERE kind = 'compose' AND status = 'completed'",
        )
        .fetch_one(&self.pool)
        .await?;
        if let Some(run) = latest {
            let mut conn = self.pool.acquire().await?;
            if let Some(b) = super::bundle_check(&mut conn, fleet_common::RunId(run)).await? {
                for (figure, n) in [
                    ("skills", b.skills),
                    ("pass_before", b.pass_before),
                    ("pass_after", b.pass_after),
                    ("interference", b.interference),
                    ("health_failed", b.health_failed),
                ] {
                    self.metrics
                        .bundle_check
                        .with_label_values(&[figure])
                        .set(n as i64);
                }
            }
        }
        Ok(())
    }

    /// The latest dreamt learning run of each (pack, profile) with SCAP
    /// content gets one composition check of the bundle `main` now holds.
    async fn compose_after_dreams(&self) -> Result<(), CoordinatorError> {
        let due: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT r.id, r.skill_pack, r.profile FROM runs r
             JOIN dream_runs d ON d.run_id = r.id AND d.status = 'done'
             WHERE r.kind = 'learn'
               AND r.id = (SELECT max(x.id) FROM runs x WHERE x.kind = 'learn'
                           AND x.skill_pack = r.skill_pack AND x.profile = r.profile)
               AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.kind = 'compose' AND c.after_run = r.id)
             ORDER BY r.id",
        )
        .fetch_all(&self.pool)
        .await?;
        for (run, pack_name, profile) in due {
            let Ok(pack) = self.packs.get(&pack_name) else {
                continue;
            };
            if pack.checks.datastream.is_none() {
                continue;
            }
            let bundle = super::current_bundle(
                &self.pool,
                &self.packs,
                &self.knowledge_dir,
                &pack_name,
                Some(&profile),
            )
            .await?;
            let check = HostRun::compose(&pack, &bundle, Some(fleet_common::RunId(run)));
            match submit_and_release(&self.pool, &self.leases, &check).await {
                Ok(id) => tracing::info!(
                    after_run = run,
                    run = id.0,
                    skills = bundle.sections.len(),
                    "composition check of main's bundle submitted"
                ),
                // Another coordinator submitted it first (unique index).
                Err(CoordinatorError::Postgres(e)) if is_unique_violation(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}
