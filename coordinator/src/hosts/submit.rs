//! A host run in Postgres: the run (kind `compose` or `harden`, its
//! rollout control) and one work item per host carrying its job, all
//! `held`; the rollout controller then releases them into Redis
//! ([`super::rollout::release`]). Postgres first, in one transaction, as
//! for learning runs: reconciliation can always rebuild the queue (L6).

use fleet_common::bundle::Bundle;
use fleet_common::host::{HostJob, InventoryHost, Rollout};
use fleet_common::lease::LeaseClient;
use fleet_common::skill_pack::SkillPack;
use fleet_common::{Budgets, RunId};
use sqlx::PgPool;

use crate::error::CoordinatorError;

/// Host names are work-item rule ids and path components on agents.
pub fn validate_host_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "host name {name:?} must be 1-64 characters of [A-Za-z0-9._-]"
        ))
    }
}

/// What a host run is made of.
pub struct HostRun<'a> {
    pub pack: &'a SkillPack,
    pub bundle: &'a Bundle,
    pub rollout: Rollout,
    /// Compose runs: the learning run whose dream stage it follows.
    pub after_run: Option<RunId>,
    /// (work item name, job) in rollout order.
    pub items: Vec<(String, HostJob)>,
}

impl HostRun<'_> {
    /// A composition check of `bundle` on one fresh target.
    pub fn compose<'a>(
        pack: &'a SkillPack,
        bundle: &'a Bundle,
        after_run: Option<RunId>,
    ) -> HostRun<'a> {
        HostRun {
            pack,
            bundle,
            rollout: Rollout {
                concurrency: 1,
                canary: 0,
                max_fail_percent: 100,
            },
            after_run,
            items: vec![(
                "bundle".into(),
                HostJob::Compose {
                    bundle: bundle.clone(),
                },
            )],
        }
    }

    /// A rollout of `bundle` to `hosts`.
    pub fn harden<'a>(
        pack: &'a SkillPack,
        bundle: &'a Bundle,
        hosts: Vec<InventoryHost>,
        check_only: bool,
        rollout: Rollout,
    ) -> HostRun<'a> {
        let items = hosts
            .into_iter()
            .map(|host| {
                let name = host.name.clone();
                let job = HostJob::Harden {
                    bundle: bundle.clone(),
                    host: Box::new(host),
                    check_only,
                };
                (name, job)
            })
            .collect();
        HostRun {
            pack,
            bundle,
            rollout,
            after_run: None,
            items,
        }
    }

    fn kind(&self) -> &'static str {
        self.items.first().map_or("harden", |(_, j)| j.kind())
    }
}

/// Writes the run and its held work items; returns the run id. The caller
/// releases the first hosts with [`super::rollout::release`].
pub async fn submit(pool: &PgPool, run: &HostRun<'_>) -> Result<RunId, CoordinatorError> {
    let mut names = std::collections::HashSet::new();
    for (name, _) in &run.items {
        validate_host_name(name).map_err(CoordinatorError::Invalid)?;
        if !names.insert(name.as_str()) {
            return Err(CoordinatorError::Invalid(format!(
                "host {name:?} appears twice"
            )));
        }
    }
    if run.items.is_empty() {
        return Err(CoordinatorError::Invalid("no hosts to work on".into()));
    }
    let family = match run.kind() {
        "compose" => "compose",
        _ => "host",
    };
    let jobs: Vec<sqlx::types::Json<&HostJob>> = run
        .items
        .iter()
        .map(|(_, j)| sqlx::types::Json(j))
        .collect();
    let rules: Vec<&str> = run.items.iter().map(|(n, _)| n.as_str()).collect();
    // Host tasks are long: a whole-profile scan twice plus every section.
    let budgets = Budgets {
        max_attempts: 1,
        wall_time_s: 4 * 3600,
    };
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (skill_pack, profile, budgets, priority, total, checks, kind, rollout, after_run)
         VALUES ($1, $2, $3, 10, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(&run.pack.name)
    .bind(&run.bundle.profile)
    .bind(sqlx::types::Json(&budgets))
    .bind(rules.len() as i32)
    .bind(sqlx::types::Json(&run.pack.checks))
    .bind(run.kind())
    .bind(sqlx::types::Json(&run.rollout))
    .bind(run.after_run.map(|r| r.0))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO work_items (run_id, rule_id, family, ordinal, job, held)
         SELECT $1, u.rule, $2, (u.ord - 1)::int, u.job, true
         FROM UNNEST($3::text[], $4::jsonb[]) WITH ORDINALITY AS u(rule, job, ord)",
    )
    .bind(id)
    .bind(family)
    .bind(&rules)
    .bind(&jobs)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        run = id,
        kind = run.kind(),
        hosts = rules.len(),
        skills = run.bundle.sections.len(),
        main = %run.bundle.main_commit,
        "host run submitted"
    );
    Ok(RunId(id))
}

/// [`submit`], then release the first hosts at once.
pub async fn submit_and_release(
    pool: &PgPool,
    leases: &LeaseClient,
    run: &HostRun<'_>,
) -> Result<RunId, CoordinatorError> {
    let id = submit(pool, run).await?;
    if let Err(e) = super::rollout::release(pool, leases, id).await {
        // Committed: the controller's next tick releases it.
        tracing::warn!(run = id.0, error = %e, "releasing the first hosts failed; the rollout controller retries");
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_path_safe() {
        assert!(validate_host_name("web-01.example").is_ok());
        for bad in ["", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(validate_host_name(bad).is_err(), "{bad:?}");
        }
    }
}
