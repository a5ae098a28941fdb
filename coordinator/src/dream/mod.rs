//! The dream stage (DESIGN D1–D8): after a run completes, in this order —
//!
//! 1. **compare** the run with the previous comparable run (D6);
//! 2. **revert** promotions of that previous run whose rules regressed (D8);
//! 3. **promote** this run's candidates (and deferred ones) through the
//!    gate stack into the ledger and onto `main` (D7);
//! 4. recompute **credit** from all attempts and publish the **ranking**
//!    agents read (D1, D2, D4).
//!
//! One pass is one Postgres transaction, serialised by an advisory lock, so
//! the background worker and a `dream --run` by hand never interleave. A
//! dry run does the same work and rolls it back, and moves no ref. Git
//! writes are idempotent (an unchanged tree makes no commit), so a pass
//! whose transaction failed after moving `main` is simply redone.
//!
//! - `comparable.rs`: which outcomes may be compared; the pure judgement.
//! - `compare.rs`: previous comparable run, wins, regressions, stored.
//! - `revert.rs`: D8 reverts as new fast-forward commits.
//! - `promote.rs`: candidates (lessons, bans, skills), the ledger, APPLY.
//! - `gates.rs`: the deterministic gate stack.
//! - `budget.rs`: at most N promotions and a wall time per pass.
//! - `credit.rs`: Beta-Bernoulli credit per (family, lesson) and (rule, lesson).
//! - `ranking.rs`: trials from Postgres, `lesson_credit`, `ranking.json`.
//! - `git.rs`: git2 work off the async threads.

mod budget;
pub mod comparable;
pub mod compare;
pub mod credit;
pub mod gates;
mod git;
mod promote;
mod ranking;
mod revert;

pub use ranking::{publish, ranking_of, tallies, trials};

use std::path::PathBuf;
use std::time::Duration;

use fleet_common::api::{DreamReport, LedgerLine, PromotionInfo};
use fleet_common::RunId;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{CoordinatorError, Metrics, SkillPacks};

/// Serialises dream passes across tasks and coordinator processes.
const DREAM_LOCK: i64 = 0x00d2_ea3f;
/// How often the worker looks for completed runs not yet dreamt over.
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Dreamer {
    pool: PgPool,
    packs: SkillPacks,
    knowledge_dir: PathBuf,
    metrics: Metrics,
}

impl std::fmt::Debug for Dreamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dreamer")
            .field("knowledge_dir", &self.knowledge_dir)
            .finish_non_exhaustive()
    }
}

impl Dreamer {
    pub fn new(pool: PgPool, packs: SkillPacks, knowledge_dir: PathBuf, metrics: Metrics) -> Self {
        Self {
            pool,
            packs,
            knowledge_dir,
            metrics,
        }
    }

    /// The knowledge repo whose `main` the dream stage moves.
    pub fn knowledge_dir(&self) -> &std::path::Path {
        &self.knowledge_dir
    }

    /// One pass over the completed run `run`.
    pub async fn dream(&self, run: RunId, dry_run: bool) -> Result<DreamReport, CoordinatorError> {
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DREAM_LOCK)
            .execute(&mut *tx)
            .await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT skill_pack, status FROM runs WHERE id = $1")
                .bind(run.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((pack_name, status)) = row else {
            return Err(CoordinatorError::NotFound);
        };
        if status != "completed" {
            return Err(CoordinatorError::Conflict(format!(
                "run {run} is still running; the dream stage needs a completed run"
            )));
        }
        let pack = self.packs.get(&pack_name).ok();
        let always_escalates = |rule: &str| pack.as_ref().is_some_and(|p| p.always_escalates(rule));
        let escalation = gates::Escalation {
            rule: &always_escalates,
            touching: pack.as_ref().map_or_else(gates::Sensitive::defaults, |p| {
                gates::Sensitive::with_pack(p.escalate_touching())
            }),
        };
        let dir = self.knowledge_dir.as_path();
        let main_before = git::open_main(dir).await?.commit();

        let settings = pack.as_ref().map(|p| p.dream).unwrap_or_default();
        let comparison = match compare::previous_comparable(&mut tx, run.0).await? {
            Some(previous) => {
                let c =
                    compare::compare(&mut tx, run.0, previous, settings.max_not_comparable).await?;
                compare::store(&mut tx, run.0, &c).await?;
                Some(c)
            }
            None => None,
        };
        let reverted = match &comparison {
            Some(c) => revert::revert_regressed(&mut tx, run.0, c, dir, dry_run).await?,
            None => Vec::new(),
        };
        let mut budget = budget::PassBudget::new(&settings, started);
        let promotions =
            promote::promote(&mut tx, run.0, dir, &escalation, &mut budget, dry_run).await?;
        let ranking_changed = ranking::publish(&mut tx, dir, run.0, dry_run).await?;
        let main_after = git::open_main(dir).await?.commit();

        if dry_run {
            tx.rollback().await?;
        } else {
            sqlx::query(
                "INSERT INTO dream_runs (run_id, status, started_at, main_before, main_after)
                 VALUES ($1, 'done', $2, $3, $4)
                 ON CONFLICT (run_id) DO UPDATE SET status = 'done', started_at = EXCLUDED.started_at,
                   finished_at = now(), main_before = EXCLUDED.main_before,
                   main_after = EXCLUDED.main_after, error = NULL",
            )
            .bind(run.0)
            .bind(started_at)
            .bind(&main_before)
            .bind(&main_after)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            if let Err(e) = self.publish_gauges(run).await {
                tracing::warn!(run = run.0, error = %e, "could not refresh the run gauges");
            }
            for l in reverted.iter().chain(&promotions) {
                self.metrics
                    .promotions
                    .with_label_values(&[l.action.as_str(), l.verdict.as_str()])
                    .inc();
            }
            for stop in &budget.deferred {
                self.metrics
                    .dream_budget_deferrals
                    .with_label_values(&[stop.label()])
                    .inc();
            }
        }
        let elapsed = started.elapsed();
        self.metrics.dream_duration.observe(elapsed.as_secs_f64());
        let report = DreamReport {
            run,
            dry_run,
            comparison: comparison.map(|c| c.summary),
            reverted,
            promotions,
            ranking_changed,
            main_before,
            main_after,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        };
        tracing::info!(
            run = run.0,
            dry_run,
            promotions = report.promotions.len(),
            budget_deferred = budget.deferred.len(),
            reverted = report.reverted.len(),
            ranking_changed,
            duration_ms = report.duration_ms,
            "dream pass done"
        );
        Ok(report)
    }

    /// Sets the `fleet_run_*` gauges of `run`'s (skill, profile) from it.
    async fn publish_gauges(&self, run: RunId) -> Result<(), CoordinatorError> {
        let mut conn = self.pool.acquire().await?;
        let (skill, profile): (String, String) =
            sqlx::query_as("SELECT skill_pack, profile FROM runs WHERE id = $1")
                .bind(run.0)
                .fetch_one(&mut *conn)
                .await?;
        let (fix_rate, first_try) = compare::rates(&mut conn, run.0).await?;
        let comparison = compare::load(&mut conn, run.0).await?;
        let labels = [skill.as_str(), profile.as_str()];
        let m = &self.metrics;
        let set = |g: &prometheus::GaugeVec, v: Option<f64>| match v {
            Some(v) => g.with_label_values(&labels).set(v),
            None => {
                let _ = g.remove_label_values(&labels);
            }
        };
        set(&m.run_fix_rate, fix_rate);
        set(&m.run_first_try_rate, first_try);
        set(&m.run_wins, comparison.as_ref().map(|c| c.wins as f64));
        set(
            &m.run_regressions,
            comparison.as_ref().map(|c| c.regressions as f64),
        );
        set(
            &m.run_regression_ratio,
            comparison.as_ref().and_then(|c| c.ratio()),
        );
        set(
            &m.run_reverts_withheld,
            comparison
                .as_ref()
                .map(|c| f64::from(u8::from(c.revert_withheld.is_some()))),
        );
        // Every known reason, so a reason gone since the last run reads 0.
        for reason in fleet_common::EscalationReason::ALL {
            let labels = [skill.as_str(), profile.as_str(), reason.as_str()];
            let infrastructure = reason.class() == fleet_common::ReasonClass::Infrastructure;
            match comparison.as_ref().filter(|_| infrastructure) {
                Some(c) => {
                    let n = c.not_comparable.get(reason.as_str()).copied().unwrap_or(0);
                    m.run_not_comparable
                        .with_label_values(&labels)
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                None => {
                    let _ = m.run_not_comparable.remove_label_values(&labels);
                }
            }
        }
        Ok(())
    }

    /// After a restart: the gauges of the last dreamt run of each (skill,
    /// profile), so dashboards do not go blank until the next run.
    async fn restore_gauges(&self) -> Result<(), CoordinatorError> {
        let latest: Vec<i64> = sqlx::query_scalar(
            "SELECT max(r.id) FROM runs r JOIN dream_runs d ON d.run_id = r.id AND d.status = 'done'
             GROUP BY r.skill_pack, r.profile",
        )
        .fetch_all(&self.pool)
        .await?;
        for run in latest {
            self.publish_gauges(RunId(run)).await?;
        }
        Ok(())
    }

    /// An operator approves or rejects an ESCALATE entry.
    pub async fn decide(
        &self,
        ledger: i64,
        approve: bool,
        by: &str,
    ) -> Result<LedgerLine, CoordinatorError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DREAM_LOCK)
            .execute(&mut *tx)
            .await?;
        let line =
            promote::decide_escalated(&mut tx, ledger, approve, by, &self.knowledge_dir).await?;
        tx.commit().await?;
        self.metrics
            .promotions
            .with_label_values(&[line.action.as_str(), line.verdict.as_str()])
            .inc();
        Ok(line)
    }

    /// Ledger entries, newest first; `open_only`: escalations waiting for
    /// an operator.
    pub async fn promotions(
        &self,
        open_only: bool,
    ) -> Result<Vec<PromotionInfo>, CoordinatorError> {
        type Row = (
            i64,
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            String,
            Option<String>,
            bool,
            Option<String>,
            serde_json::Value,
            Option<String>,
            Option<i64>,
            chrono::DateTime<chrono::Utc>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT p.id, p.run_id, p.lesson_id, p.kind, p.family, p.rule_id, p.action, p.verdict,
                    p.reason, p.open, l.body, p.gates, p.commit_after, p.reverted_by, p.created_at
             FROM promotions p LEFT JOIN lessons l ON l.id = p.lesson_id
             WHERE p.open OR NOT $1 ORDER BY p.id DESC LIMIT 1000",
        )
        .bind(open_only)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PromotionInfo {
                id: r.0,
                run: RunId(r.1),
                lesson: r.2,
                kind: r.3,
                family: r.4,
                rule: r.5,
                action: r.6,
                verdict: r.7,
                reason: r.8,
                open: r.9,
                text: r.10,
                gates: r.11,
                commit_after: r.12,
                reverted_by: r.13,
                created_at: r.14.to_rfc3339(),
            })
            .collect())
    }

    /// Dreams over every completed run without a pass, oldest first, until
    /// `stop`. A failed pass is recorded (and not retried by itself; a
    /// `dream --run` by hand retries it).
    pub async fn run(self, stop: CancellationToken) {
        if let Err(e) = self.restore_gauges().await {
            tracing::warn!(error = %e, "dream: cannot restore the run gauges");
        }
        loop {
            match self.next_run().await {
                Ok(Some(run)) => self.dream_and_record(run).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "dream: cannot look for completed runs"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn next_run(&self) -> Result<Option<RunId>, sqlx::Error> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT r.id FROM runs r LEFT JOIN dream_runs d ON d.run_id = r.id
             WHERE r.status = 'completed' AND r.kind = 'learn' AND d.run_id IS NULL ORDER BY r.id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.map(RunId))
    }

    async fn dream_and_record(&self, run: RunId) {
        match self.dream(run, false).await {
            Ok(_) => self.metrics.dreams.with_label_values(&["done"]).inc(),
            Err(e) => {
                tracing::error!(run = run.0, error = %e, "dream pass failed");
                self.metrics.dreams.with_label_values(&["failed"]).inc();
                let recorded = sqlx::query(
                    "INSERT INTO dream_runs (run_id, status, started_at, error)
                     VALUES ($1, 'failed', now(), $2) ON CONFLICT (run_id) DO NOTHING",
                )
                .bind(run.0)
                .bind(e.to_string())
                .execute(&self.pool)
                .await;
                if let Err(e) = recorded {
                    tracing::warn!(run = run.0, error = %e, "could not record the failed dream pass");
                }
            }
        }
    }
}
