//! Read models behind the API: a run's progress and the agent roster.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use fleet_common::api::{AgentInfo, RunStatus};
use fleet_common::lease::LeaseClient;
use fleet_common::{AgentId, RunId};
use sqlx::PgPool;

use crate::error::CoordinatorError;

#[derive(sqlx::FromRow)]
struct RunRow {
    skill_pack: String,
    profile: String,
    status: String,
    total: i32,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

/// A run's progress; `NotFound` if there is no such run.
///
/// Every count comes from Postgres (`work_items` and `run_events`); lease
/// losses are the run's `lease_reclaimed` events.
pub async fn run_status(pool: &PgPool, run: RunId) -> Result<RunStatus, CoordinatorError> {
    let row: RunRow = sqlx::query_as(
        "SELECT skill_pack, profile, status, total, created_at, finished_at FROM runs WHERE id = $1",
    )
    .bind(run.0)
    .fetch_optional(pool)
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
        .fetch_one(pool)
        .await?;
    let by_reason: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(reason, ''), count(*) FROM work_items
         WHERE run_id = $1 AND outcome = 'escalated' GROUP BY 1",
    )
    .bind(run.0)
    .fetch_all(pool)
    .await?;
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_events WHERE run_id = $1 AND rejected IS NOT NULL",
    )
    .bind(run.0)
    .fetch_one(pool)
    .await?;
    let lease_losses: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_events WHERE run_id = $1 AND kind = 'lease_reclaimed'",
    )
    .bind(run.0)
    .fetch_one(pool)
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
        lease_losses: lease_losses as u64,
        stale_completions_rejected: stale as u64,
        created_at: row.created_at.to_rfc3339(),
        finished_at: row.finished_at.map(|t| t.to_rfc3339()),
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
    let window = 3 * leases.settings().ttl_ms;
    let (alive, seen) = match liveness(leases, window).await {
        Ok(v) => v,
        Err(error) => {
            tracing::debug!(%error, "agent liveness unavailable");
            Default::default()
        }
    };
    let mut out: Vec<AgentInfo> = rows
        .into_iter()
        .map(|r| AgentInfo {
            alive: alive.contains_key(&r.id),
            last_seen_ms: seen.get(&r.id).copied(),
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
            });
        }
    }
    out.sort_by(|a, b| a.agent.cmp(&b.agent));
    Ok(out)
}

type Seen = HashMap<String, i64>;

async fn liveness(leases: &LeaseClient, window_ms: u64) -> Result<(Seen, Seen), CoordinatorError> {
    let alive: Seen = leases.live_agents(window_ms).await?.into_iter().collect();
    let seen: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(leases.keys().agents())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut leases.connection())
        .await?;
    Ok((alive, seen.into_iter().collect()))
}
