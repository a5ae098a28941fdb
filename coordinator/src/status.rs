//! Read models behind the API: a run's progress, its per-rule report, the
//! runs comparable with it and the agent roster.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use fleet_common::api::{
    AgentInfo, FixSource, PointComparison, RuleOutcome, RuleReport, RunHistory, RunMeans, RunPoint,
    RunReport, RunStatus, TargetNeed,
};
use fleet_common::event::COORDINATOR_AGENT;
use fleet_common::lease::LeaseClient;
use fleet_common::{AgentId, RunId, TargetClass};
use sqlx::{PgConnection, PgPool};

use crate::error::CoordinatorError;

#[derive(sqlx::FromRow)]
struct RunRow {
    skill_pack: String,
    profile: String,
    status: String,
    total: i32,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    kind: String,
}

/// A run's progress; `NotFound` if there is no such run.
///
/// Every count comes from Postgres (`work_items` and `run_events`); lease
/// losses are the run's `lease_reclaimed` events.
pub async fn run_status(pool: &PgPool, run: RunId) -> Result<RunStatus, CoordinatorError> {
    run_status_on(&mut *pool.acquire().await?, run).await
}

async fn run_status_on(conn: &mut PgConnection, run: RunId) -> Result<RunStatus, CoordinatorError> {
    let row: RunRow = sqlx::query_as(
        "SELECT skill_pack, profile, status, total, created_at, finished_at, kind FROM runs WHERE id = $1",
    )
    .bind(run.0)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoordinatorError::NotFound)?;
    let (finished, fixed, fixed_first_try, already_passing, escalated): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'done'),
                count(*) FILTER (WHERE outcome = 'fixed'),
                count(*) FILTER (WHERE outcome = 'fixed' AND fixed_attempt = 1),
                count(*) FILTER (WHERE outcome = 'already_passing'),
                count(*) FILTER (WHERE outcome = 'escalated')
         FROM work_items WHERE run_id = $1",
        )
        .bind(run.0)
        .fetch_one(&mut *conn)
        .await?;
    // The same means as `RunMeans::of` over the report's rows: figures of
    // outcomes the coordinator dead-lettered (`lease_lost`, reported as 0)
    // are unknown, not zero, and left out.
    let (mean_attempts, wall_ms_per_fixed, wall_ms_per_escalated): (
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ) = sqlx::query_as(
        "SELECT (avg(attempts) FILTER (WHERE outcome IN ('fixed', 'escalated')))::float8,
                (avg(duration_ms) FILTER (WHERE outcome = 'fixed'))::float8,
                (avg(duration_ms) FILTER (WHERE outcome = 'escalated'))::float8
         FROM work_items
         WHERE run_id = $1 AND accepted_agent IS DISTINCT FROM $2",
    )
    .bind(run.0)
    .bind(COORDINATOR_AGENT)
    .fetch_one(&mut *conn)
    .await?;
    let by_reason: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(reason, ''), count(*) FROM work_items
         WHERE run_id = $1 AND outcome = 'escalated' GROUP BY 1",
    )
    .bind(run.0)
    .fetch_all(&mut *conn)
    .await?;
    // Per target class: how many, and the first rule ids.
    let needs: Vec<(String, i64, Vec<String>)> = sqlx::query_as(
        "SELECT coalesce(reason, ''), count(*),
                (array_agg(rule_id ORDER BY rule_id))[1:$2]
         FROM work_items
         WHERE run_id = $1 AND outcome = 'needs_target' GROUP BY 1",
    )
    .bind(run.0)
    .bind(TargetNeed::LISTED as i32)
    .fetch_all(&mut *conn)
    .await?;
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_events WHERE run_id = $1 AND rejected IS NOT NULL",
    )
    .bind(run.0)
    .fetch_one(&mut *conn)
    .await?;
    let lease_losses: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_events WHERE run_id = $1 AND kind = 'lease_reclaimed'",
    )
    .bind(run.0)
    .fetch_one(&mut *conn)
    .await?;
    let comparison = crate::dream::compare::load(conn, run.0).await?;
    let dream: Option<String> =
        sqlx::query_scalar("SELECT status FROM dream_runs WHERE run_id = $1")
            .bind(run.0)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(RunStatus {
        run,
        skill_pack: row.skill_pack,
        profile: row.profile,
        status: row.status,
        total: row.total as u64,
        finished: finished as u64,
        fixed: fixed as u64,
        fixed_first_try: fixed_first_try as u64,
        already_passing: already_passing as u64,
        escalated: escalated as u64,
        escalated_by_reason: by_reason
            .into_iter()
            .map(|(r, n)| (r, n as u64))
            .collect::<BTreeMap<_, _>>(),
        needs_target: needs.iter().map(|(_, n, _)| *n as u64).sum(),
        needs_target_by_class: needs
            .into_iter()
            .map(|(class, n, examples)| {
                let need = TargetNeed {
                    rules: n as u64,
                    examples,
                };
                (class, need)
            })
            .collect(),
        lease_losses: lease_losses as u64,
        stale_completions_rejected: stale as u64,
        created_at: row.created_at.to_rfc3339(),
        finished_at: row.finished_at.map(|t| t.to_rfc3339()),
        mean_attempts,
        wall_ms_per_fixed,
        wall_ms_per_escalated,
        comparison,
        dream,
        bundle: crate::hosts::bundle_check(&mut *conn, run).await?,
        kind: row.kind,
    })
}

#[derive(sqlx::FromRow)]
struct RuleRow {
    rule_id: String,
    family: String,
    outcome: Option<String>,
    reason: Option<String>,
    attempts: Option<i32>,
    duration_ms: Option<i64>,
    fixed_attempt: Option<i32>,
    fixed_by: Option<String>,
}

/// A run's totals and one row per rule, sorted by rule id; `NotFound` if
/// there is no such run. The means are computed from the rows (the same
/// definition as `run_status`'s SQL).
pub async fn run_report(pool: &PgPool, run: RunId) -> Result<RunReport, CoordinatorError> {
    // One snapshot, so the totals and the rows agree on a running run.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut totals = run_status_on(&mut tx, run).await?;
    let rows: Vec<RuleRow> = sqlx::query_as(
        "SELECT w.rule_id, w.family, w.outcome, w.reason, w.fixed_attempt,
                CASE WHEN w.accepted_agent = $2 THEN NULL ELSE w.attempts END AS attempts,
                CASE WHEN w.accepted_agent = $2 THEN NULL ELSE w.duration_ms END AS duration_ms,
                a.script_source AS fixed_by
         FROM work_items w
         LEFT JOIN attempts a ON w.outcome = 'fixed' AND a.work_item_id = w.id
              AND a.epoch = w.accepted_epoch AND a.attempt = w.fixed_attempt
         WHERE w.run_id = $1 ORDER BY w.rule_id",
    )
    .bind(run.0)
    .bind(COORDINATOR_AGENT)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let rules = rows
        .into_iter()
        .map(|r| {
            let outcome = RuleOutcome::from_column(r.outcome.as_deref()).ok_or_else(|| {
                CoordinatorError::Postgres(sqlx::Error::Decode(
                    format!(
                        "work item {} has an unknown outcome {:?}",
                        r.rule_id, r.outcome
                    )
                    .into(),
                ))
            })?;
            Ok(RuleReport {
                rule: r.rule_id,
                family: r.family,
                outcome,
                reason: r.reason,
                attempts: r.attempts.map(|n| n.max(0) as u32),
                wall_ms: r.duration_ms.map(|n| n.max(0) as u64),
                fixed_attempt: r.fixed_attempt.map(|n| n.max(0) as u32),
                fixed_by: r.fixed_by.as_deref().and_then(FixSource::from_column),
            })
        })
        .collect::<Result<Vec<_>, CoordinatorError>>()?;
    let means = RunMeans::of(&rules);
    totals.mean_attempts = means.mean_attempts;
    totals.wall_ms_per_fixed = means.wall_ms_per_fixed;
    totals.wall_ms_per_escalated = means.wall_ms_per_escalated;
    Ok(RunReport::new(totals, rules))
}

#[derive(sqlx::FromRow)]
struct PointRow {
    id: i64,
    skill_pack: String,
    profile: String,
    status: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    fixed: i64,
    fixed_first_try: i64,
    escalated: i64,
    already_passing: i64,
    previous_run_id: Option<i64>,
    wins: Option<i32>,
    regressions: Option<i32>,
}

/// The completed runs of `run`'s skill pack and profile up to it, and
/// `run` itself, oldest first (the latest `RunHistory::MAX_RUNS`), each with
/// its rates and the dream stage's stored comparison; `NotFound` if there
/// is no such run.
pub async fn run_history(pool: &PgPool, run: RunId) -> Result<RunHistory, CoordinatorError> {
    let mut rows: Vec<PointRow> = sqlx::query_as(
        "SELECT p.id, p.skill_pack, p.profile, p.status, p.created_at, p.finished_at,
                w.fixed, w.fixed_first_try, w.escalated, w.already_passing,
                c.previous_run_id, c.wins, c.regressions
         FROM runs r
         JOIN runs p ON p.skill_pack = r.skill_pack AND p.profile = r.profile
                    AND p.id <= r.id AND p.kind = r.kind AND (p.status = 'completed' OR p.id = r.id)
         LEFT JOIN run_comparisons c ON c.run_id = p.id
         CROSS JOIN LATERAL (
             SELECT count(*) FILTER (WHERE outcome = 'fixed') AS fixed,
                    count(*) FILTER (WHERE outcome = 'fixed' AND fixed_attempt = 1) AS fixed_first_try,
                    count(*) FILTER (WHERE outcome = 'escalated') AS escalated,
                    count(*) FILTER (WHERE outcome = 'already_passing') AS already_passing
             FROM work_items WHERE run_id = p.id) w
         WHERE r.id = $1
         ORDER BY p.id DESC LIMIT $2",
    )
    .bind(run.0)
    .bind(RunHistory::MAX_RUNS as i64)
    .fetch_all(pool)
    .await?;
    // `run` itself is always a row: none means no such run.
    let first = rows.first().ok_or(CoordinatorError::NotFound)?;
    let (skill_pack, profile) = (first.skill_pack.clone(), first.profile.clone());
    rows.reverse();
    let runs = rows
        .into_iter()
        .map(|r| {
            let fixed = r.fixed.max(0) as u64;
            let escalated = r.escalated.max(0) as u64;
            let fixed_first_try = r.fixed_first_try.max(0) as u64;
            RunPoint {
                run: RunId(r.id),
                status: r.status,
                created_at: r.created_at.to_rfc3339(),
                finished_at: r.finished_at.map(|t| t.to_rfc3339()),
                fixed,
                fixed_first_try,
                escalated,
                already_passing: r.already_passing.max(0) as u64,
                fix_rate: (fixed + escalated > 0)
                    .then(|| fixed as f64 / (fixed + escalated) as f64),
                first_try_rate: (fixed > 0).then(|| fixed_first_try as f64 / fixed as f64),
                comparison: r.previous_run_id.map(|previous| PointComparison {
                    previous_run: RunId(previous),
                    wins: r.wins.unwrap_or(0).max(0) as u64,
                    regressions: r.regressions.unwrap_or(0).max(0) as u64,
                }),
            }
        })
        .collect();
    Ok(RunHistory {
        run,
        skill_pack,
        profile,
        runs,
    })
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: String,
    host: String,
    version: String,
    registered_at: DateTime<Utc>,
}

/// Registered agents (Postgres) joined with liveness (Redis). An agent seen
/// in Redis but never registered is listed too, with empty host and version.
/// Alive = seen within three lease TTLs by Redis's clock.
pub async fn agents(
    pool: &PgPool,
    leases: &LeaseClient,
) -> Result<Vec<AgentInfo>, CoordinatorError> {
    let rows: Vec<AgentRow> =
        sqlx::query_as("SELECT id, host, version, registered_at FROM agents ORDER BY id")
            .fetch_all(pool)
            .await?;
    let window = leases.settings().alive_window_ms();
    let (alive, seen, vm) = match liveness(leases, window).await {
        Ok(v) => v,
        Err(error) => {
            tracing::debug!(%error, "agent liveness unavailable");
            Default::default()
        }
    };
    let class = |id: &str| {
        seen.contains_key(id).then(|| {
            if vm.contains_key(id) {
                TargetClass::Vm
            } else {
                TargetClass::Container
            }
        })
    };
    let mut out: Vec<AgentInfo> = rows
        .into_iter()
        .map(|r| AgentInfo {
            alive: alive.contains_key(&r.id),
            last_seen_ms: seen.get(&r.id).copied(),
            target_class: class(&r.id),
            agent: AgentId(r.id),
            host: r.host,
            version: r.version,
            registered_at: r.registered_at.to_rfc3339(),
        })
        .collect();
    for (id, last) in &seen {
        if !out.iter().any(|a| &a.agent.0 == id) {
            out.push(AgentInfo {
                agent: AgentId(id.clone()),
                host: String::new(),
                version: String::new(),
                registered_at: String::new(),
                last_seen_ms: Some(*last),
                alive: alive.contains_key(id),
                target_class: class(id),
            });
        }
    }
    out.sort_by(|a, b| a.agent.cmp(&b.agent));
    Ok(out)
}

type Seen = HashMap<String, i64>;

/// Alive agents, every agent Redis saw, and those that touched presence
/// last as agents on VMs.
async fn liveness(
    leases: &LeaseClient,
    window_ms: u64,
) -> Result<(Seen, Seen, Seen), CoordinatorError> {
    let alive: Seen = leases.live_agents(window_ms).await?.into_iter().collect();
    let all = |key: String| async move {
        let seen: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut leases.connection())
            .await?;
        Ok::<Seen, CoordinatorError>(seen.into_iter().collect())
    };
    let seen = all(leases.keys().agents()).await?;
    let vm = all(leases.keys().agents_vm()).await?;
    Ok((alive, seen, vm))
}
