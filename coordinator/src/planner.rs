//! The planner: turns a submission into a run and its work items in
//! Postgres, then queues them in Redis.
//!
//! Postgres is written first and in one transaction, so a run either exists
//! with all its work items or not at all. Redis comes second; if it fails,
//! the run is safe in Postgres and reconciliation queues it (DESIGN L6).

use fleet_common::api::{SubmitRun, SubmitRunResponse};
use fleet_common::lease::LeaseClient;
use fleet_common::{RuleTask, RunId, TaskId};
use sqlx::PgPool;

use crate::error::CoordinatorError;
use crate::queue::{into_enqueue_order, planned_task};
use crate::reconcile::request_reconcile;
use crate::validate::validate_submission;

pub use crate::packs::SkillPacks;

pub async fn submit(
    pool: &PgPool,
    leases: &LeaseClient,
    packs: &SkillPacks,
    req: SubmitRun,
) -> Result<SubmitRunResponse, CoordinatorError> {
    validate_submission(&req, packs).map_err(CoordinatorError::Invalid)?;
    let pack = packs.get(&req.skill_pack)?;
    let profile = req.profile.clone().unwrap_or_else(|| pack.profile.clone());

    let n = req.rules.len();
    let mut families = Vec::with_capacity(n);
    let mut groups = Vec::with_capacity(n);
    let mut hold_groups = Vec::with_capacity(n);
    let mut hold_thresholds = Vec::with_capacity(n);
    let mut placements = Vec::with_capacity(n);
    for rule in &req.rules {
        families.push(pack.family_of(rule));
        let placement = pack.placement(rule);
        // Unnest cannot carry a text[] per row; group names are globs and
        // never contain a tab, which the enqueue script splits on anyway.
        groups.push(placement.groups.join("\t"));
        hold_groups.push(placement.hold.as_ref().map(|(g, _)| g.clone()));
        hold_thresholds.push(placement.hold.as_ref().map(|(_, t)| *t as i32));
        placements.push(placement);
    }

    let mut tx = pool.begin().await?;
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO runs (skill_pack, profile, budgets, priority, total, checks)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&req.skill_pack)
    .bind(&profile)
    .bind(sqlx::types::Json(&req.budgets))
    .bind(req.priority as i32)
    .bind(n as i32)
    .bind(sqlx::types::Json(&pack.checks))
    .fetch_one(&mut *tx)
    .await?;
    let rows: Vec<(i64, i32)> = sqlx::query_as(
        "INSERT INTO work_items (run_id, rule_id, family, ordinal, groups, hold_group, hold_threshold)
         SELECT $1, u.rule, u.family, (u.ord - 1)::int,
                CASE WHEN u.groups = '' THEN '{}'::text[] ELSE string_to_array(u.groups, E'\\t') END,
                u.hold_group, u.hold_threshold
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::int[])
              WITH ORDINALITY AS u(rule, family, groups, hold_group, hold_threshold, ord)
         ORDER BY u.ord
         RETURNING id, ordinal",
    )
    .bind(run)
    .bind(&req.rules)
    .bind(&families)
    .bind(&groups)
    .bind(&hold_groups)
    .bind(&hold_thresholds)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(run, tasks = n, skill_pack = %req.skill_pack, %profile, "run submitted");

    let budget = leases.settings().lease_loss_budget;
    let planned = rows
        .into_iter()
        .map(|(id, ordinal)| {
            let i = ordinal as usize;
            let task = RuleTask {
                run: RunId(run),
                task: TaskId(id),
                rule: req.rules[i].clone(),
                family: families[i].clone(),
                skill_pack: req.skill_pack.clone(),
                profile: profile.clone(),
                budgets: req.budgets,
                checks: pack.checks.clone(),
            };
            let p = &placements[i];
            planned_task(
                task,
                ordinal,
                req.priority,
                budget,
                &p.groups,
                p.hold.clone(),
            )
        })
        .collect();
    let queued = into_enqueue_order(planned);
    if let Err(error) = leases.enqueue(&queued).await {
        // The run is committed; losing Redis here must not lose it.
        request_reconcile();
        tracing::warn!(run, %error, "enqueue failed after commit; reconciliation will queue the run");
    }
    Ok(SubmitRunResponse {
        run: RunId(run),
        tasks: n as u64,
    })
}
