//! The rollout controller (DESIGN H4): which held hosts of a host run go
//! into the Redis queue, and when the rollout stops.
//!
//! - at most `concurrency` hosts in flight (released, not finished);
//! - the first `canary` hosts (in inventory order) must all succeed before
//!   any other is released; one failing canary halts the rollout;
//! - once more than `max_fail_percent` of the finished hosts failed, no
//!   new host is released; hosts in flight finish, the rest are recorded
//!   as escalated with reason `not_started`.
//!
//! Every decision is made under the run row's lock, so two coordinators
//! never release past the limits; the queue write follows the commit, and
//! a failed one is repaired by reconciliation (L6).

use fleet_common::host::{HostJob, Rollout};
use fleet_common::lease::LeaseClient;
use fleet_common::{Budgets, Checks, RuleTask, RunId, TargetClass, TaskId};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::error::CoordinatorError;
use crate::queue::{into_enqueue_order, planned_task};
use crate::reconcile::request_reconcile;

/// Escalation reason of hosts a halted rollout never started.
pub const NOT_STARTED: &str = "not_started";

/// Where a run's hosts stand, in inventory order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostState {
    pub held: bool,
    pub finished: bool,
    pub failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Release this many more hosts (in order).
    Release(usize),
    /// Stop: record every held host as not started.
    Halt,
}

/// The controller's rule, pure: `hosts` in inventory order.
pub fn decide(rollout: &Rollout, hosts: &[HostState]) -> Decision {
    let canary = (rollout.canary as usize).min(hosts.len());
    let canaries = &hosts[..canary];
    if canaries.iter().any(|h| h.finished && h.failed) {
        return Decision::Halt;
    }
    let finished = hosts.iter().filter(|h| h.finished).count();
    let failed = hosts.iter().filter(|h| h.finished && h.failed).count();
    if failed * 100 > rollout.max_fail_percent as usize * finished {
        return Decision::Halt;
    }
    let in_flight = hosts.iter().filter(|h| !h.held && !h.finished).count();
    let slots = (rollout.concurrency.max(1) as usize).saturating_sub(in_flight);
    let held = hosts.iter().filter(|h| h.held).count();
    let canaries_done = canaries.iter().all(|h| h.finished);
    let open = if canaries_done {
        held
    } else {
        // Only canaries until every one of them succeeded.
        canaries.iter().filter(|h| h.held).count()
    };
    Decision::Release(slots.min(open))
}

/// One controller step for `run`: release what [`decide`] allows, or halt.
/// Returns how many hosts were released.
pub async fn release(
    pool: &PgPool,
    leases: &LeaseClient,
    run: RunId,
) -> Result<usize, CoordinatorError> {
    let mut tx = pool.begin().await?;
    let row: Option<(Option<Json<Rollout>>, String)> =
        sqlx::query_as("SELECT rollout, status FROM runs WHERE id = $1 FOR UPDATE")
            .bind(run.0)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((rollout, status)) = row else {
        return Err(CoordinatorError::NotFound);
    };
    if status != "running" {
        return Ok(0);
    }
    let rollout = rollout.map(|r| r.0).unwrap_or_default();
    let hosts: Vec<(bool, String, Option<String>)> = sqlx::query_as(
        "SELECT held, state, outcome FROM work_items WHERE run_id = $1 ORDER BY ordinal",
    )
    .bind(run.0)
    .fetch_all(&mut *tx)
    .await?;
    let states: Vec<HostState> = hosts
        .iter()
        .map(|(held, state, outcome)| HostState {
            held: *held && state == "pending",
            finished: state == "done",
            failed: outcome.as_deref() == Some("escalated"),
        })
        .collect();
    let released = match decide(&rollout, &states) {
        Decision::Release(0) => Vec::new(),
        Decision::Release(n) => {
            let budget = leases.settings().lease_loss_budget;
            release_next(&mut tx, run, n, budget).await?
        }
        Decision::Halt => {
            halt(&mut tx, run).await?;
            Vec::new()
        }
    };
    tx.commit().await?;
    let n = released.len();
    if n > 0 {
        tracing::info!(run = run.0, hosts = n, "rollout: hosts released");
        if let Err(e) = leases.enqueue(&released).await {
            request_reconcile();
            tracing::warn!(run = run.0, error = %e, "rollout: enqueue failed after commit; reconciliation will queue the hosts");
        }
    }
    Ok(n)
}

type Released = (
    i64,
    String,
    String,
    i32,
    Json<HostJob>,
    String,
    Json<Checks>,
    i32,
);

async fn release_next(
    tx: &mut PgConnection,
    run: RunId,
    n: usize,
    lease_loss_budget: u32,
) -> Result<Vec<fleet_common::lease::QueuedTask>, CoordinatorError> {
    let rows: Vec<Released> = sqlx::query_as(
        "UPDATE work_items w SET held = false FROM runs r
         WHERE r.id = w.run_id AND w.id IN (
             SELECT id FROM work_items WHERE run_id = $1 AND held AND state = 'pending'
             ORDER BY ordinal LIMIT $2)
         RETURNING w.id, w.rule_id, w.family, w.ordinal, w.job, r.skill_pack, r.checks, r.priority",
    )
    .bind(run.0)
    .bind(n as i64)
    .fetch_all(&mut *tx)
    .await?;
    let planned = rows
        .into_iter()
        .map(
            |(id, rule, family, ordinal, job, skill_pack, checks, priority)| {
                let job = job.0;
                let task = RuleTask {
                    run,
                    task: TaskId(id),
                    rule,
                    family,
                    skill_pack,
                    profile: job.bundle().profile.clone(),
                    budgets: Budgets::default(),
                    checks: checks.0,
                    rule_text: None,
                    job: Some(job),
                };
                planned_task(
                    task,
                    ordinal,
                    priority.max(0) as u32,
                    lease_loss_budget,
                    &[],
                    None,
                    // Host tasks go to any agent: harden reaches its hosts
                    // through a sandbox, compose checks on a container.
                    TargetClass::Container,
                )
            },
        )
        .collect();
    Ok(into_enqueue_order(planned))
}

async fn halt(tx: &mut PgConnection, run: RunId) -> Result<(), CoordinatorError> {
    let stopped = sqlx::query(
        "UPDATE work_items SET state = 'done', outcome = 'escalated', reason = $2, finished_at = now()
         WHERE run_id = $1 AND held AND state = 'pending'",
    )
    .bind(run.0)
    .bind(NOT_STARTED)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE runs SET status = 'completed', finished_at = now()
         WHERE id = $1 AND NOT EXISTS
           (SELECT 1 FROM work_items WHERE run_id = $1 AND state = 'pending')",
    )
    .bind(run.0)
    .execute(&mut *tx)
    .await?;
    if stopped > 0 {
        tracing::warn!(
            run = run.0,
            not_started = stopped,
            "rollout halted: canary failed or the failure threshold was passed"
        );
    }
    Ok(())
}

/// Host runs with hosts still held, for the controller's tick.
pub async fn runs_with_held_hosts(pool: &PgPool) -> Result<Vec<RunId>, CoordinatorError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT w.run_id FROM work_items w JOIN runs r ON r.id = w.run_id
         WHERE r.status = 'running' AND w.held AND w.state = 'pending' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(RunId).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> HostState {
        HostState {
            held: true,
            finished: false,
            failed: false,
        }
    }
    fn running() -> HostState {
        HostState {
            held: false,
            ..held()
        }
    }
    fn ok() -> HostState {
        HostState {
            held: false,
            finished: true,
            failed: false,
        }
    }
    fn failed() -> HostState {
        HostState {
            failed: true,
            ..ok()
        }
    }
    fn rollout(concurrency: u32, canary: u32, max_fail_percent: u32) -> Rollout {
        Rollout {
            concurrency,
            canary,
            max_fail_percent,
        }
    }

    #[test]
    fn concurrency_bounds_hosts_in_flight() {
        let r = rollout(2, 0, 10);
        assert_eq!(decide(&r, &[held(); 5]), Decision::Release(2));
        assert_eq!(
            decide(&r, &[running(), held(), held()]),
            Decision::Release(1)
        );
        assert_eq!(
            decide(&r, &[running(), running(), held()]),
            Decision::Release(0)
        );
        assert_eq!(decide(&r, &[ok(), ok(), held()]), Decision::Release(1));
    }

    #[test]
    fn canaries_go_first_and_one_failure_halts() {
        let r = rollout(4, 1, 100);
        assert_eq!(decide(&r, &[held(); 3]), Decision::Release(1));
        assert_eq!(
            decide(&r, &[running(), held(), held()]),
            Decision::Release(0)
        );
        assert_eq!(decide(&r, &[ok(), held(), held()]), Decision::Release(2));
        assert_eq!(decide(&r, &[failed(), held(), held()]), Decision::Halt);
    }

    #[test]
    fn the_failure_threshold_stops_new_hosts() {
        let r = rollout(1, 0, 10);
        // 1 of 10 finished failed: exactly 10 %, not more.
        let mut hosts = vec![ok(); 9];
        hosts.push(failed());
        hosts.push(held());
        assert_eq!(decide(&r, &hosts), Decision::Release(1));
        let hosts = [ok(), failed(), held()];
        assert_eq!(decide(&r, &hosts), Decision::Halt);
        // Nothing finished yet: nothing to judge.
        assert_eq!(decide(&r, &[held(); 2]), Decision::Release(1));
    }
}
