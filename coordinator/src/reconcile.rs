//! Rebuilds the Redis queue from Postgres (DESIGN L6) under a new epoch
//! generation (DESIGN L1).
//!
//! Order matters: bump the generation in Postgres, put every pending task
//! back, and only then install the generation in Redis. Lease scripts refuse
//! to grant while Redis has no generation, so no grant can happen before the
//! queue is whole, and every later grant carries the new, higher generation.

use std::sync::atomic::{AtomicBool, Ordering};

use fleet_common::lease::LeaseClient;
use fleet_common::{Budgets, Checks, RuleTask, RuleText, RunId, TargetClass, TaskId};
use sqlx::types::Json;
use sqlx::PgPool;

use crate::error::CoordinatorError;
use crate::queue::{into_enqueue_order, planned_task};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// The generation now in force in Redis.
    pub generation: u64,
    /// Tasks Redis did not have and got back.
    pub enqueued: u64,
}

/// Set when something (a failed enqueue after commit) left Postgres ahead of
/// Redis; the reaper reconciles at its next tick. Process-wide on purpose:
/// the planner is called without a handle to the reaper, and a spurious
/// reconciliation is harmless (it is idempotent and epochs only grow).
static RECONCILE_REQUESTED: AtomicBool = AtomicBool::new(false);

pub fn request_reconcile() {
    RECONCILE_REQUESTED.store(true, Ordering::SeqCst);
}

pub(crate) fn take_reconcile_request() -> bool {
    RECONCILE_REQUESTED.swap(false, Ordering::SeqCst)
}

#[derive(sqlx::FromRow)]
struct PendingItem {
    id: i64,
    run_id: i64,
    rule_id: String,
    family: String,
    ordinal: i32,
    groups: Vec<String>,
    hold_group: Option<String>,
    hold_threshold: Option<i32>,
    skill_pack: String,
    profile: String,
    budgets: Json<Budgets>,
    checks: Json<Checks>,
    rule_text: Option<Json<RuleText>>,
    priority: i32,
    /// Host tasks (DESIGN H3, H4); held hosts wait for the rollout.
    job: Option<Json<fleet_common::host::HostJob>>,
    /// Which ready set the task goes back to (issue 24).
    target_need: String,
}

pub async fn reconcile(
    pool: &PgPool,
    leases: &LeaseClient,
) -> Result<ReconcileReport, CoordinatorError> {
    let generation: i64 = sqlx::query_scalar("SELECT nextval('epoch_generation')")
        .fetch_one(pool)
        .await?;
    let items: Vec<PendingItem> = sqlx::query_as(
        "SELECT w.id, w.run_id, w.rule_id, w.family, w.ordinal, w.groups, w.hold_group,
                w.hold_threshold, r.skill_pack, r.profile, r.budgets, r.checks, w.rule_text, r.priority,
                w.job, w.target_need
         FROM work_items w JOIN runs r ON r.id = w.run_id
         WHERE r.status = 'running' AND w.state = 'pending' AND NOT w.held",
    )
    .fetch_all(pool)
    .await?;
    let budget = leases.settings().lease_loss_budget;
    let planned = items
        .into_iter()
        .map(|w| {
            let task = RuleTask {
                run: RunId(w.run_id),
                task: TaskId(w.id),
                rule: w.rule_id,
                family: w.family,
                skill_pack: w.skill_pack,
                profile: w.profile,
                budgets: w.budgets.0,
                checks: w.checks.0,
                rule_text: w.rule_text.map(|t| t.0),
                job: w.job.map(|j| j.0),
            };
            let hold = w.hold_group.zip(w.hold_threshold.map(|t| t.max(0) as u32));
            // The column's CHECK knows no other class; a newer one this
            // build cannot read is safest where only VM agents lease.
            let need = TargetClass::parse(&w.target_need).unwrap_or(TargetClass::Vm);
            planned_task(
                task,
                w.ordinal,
                w.priority.max(0) as u32,
                budget,
                &w.groups,
                hold,
                need,
            )
        })
        .collect();
    let queued = into_enqueue_order(planned);
    let enqueued = leases.enqueue(&queued).await?;
    // Last: from here on agents may lease again (see module docs).
    let generation = leases.set_generation(generation as u64).await?;
    tracing::info!(
        generation,
        enqueued,
        pending = queued.len(),
        "reconciled redis from postgres"
    );
    Ok(ReconcileReport {
        generation,
        enqueued,
    })
}
