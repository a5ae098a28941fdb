//! The planner: turns a submission into a run and its work items in
//! Postgres, then queues them in Redis.
//!
//! Postgres is written first and in one transaction, so a run either exists
//! with all its work items or not at all. Redis comes second; if it fails,
//! the run is safe in Postgres and reconciliation queues it (DESIGN L6).
//!
//! A rule the pack says needs a VM (`[[requires]]`, issue 24) keeps that
//! need in `work_items.target_need` and waits in the VM-only ready set. When
//! no agent with VM targets is live at submission (Redis's presence, L2),
//! such rules are recorded `needs_target` instead: never leased, never
//! escalated, so the run still completes and its report says what it could
//! not try.

use std::collections::{HashMap, HashSet};

use fleet_common::api::{SubmitRun, SubmitRunResponse};
use fleet_common::lease::LeaseClient;
use fleet_common::{Outcome, RuleTask, RuleText, RunId, TargetClass, TaskId};
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
    let catalog = packs.catalogs().rules(&pack, &profile).await?;
    let texts: HashMap<String, RuleText> = catalog.iter().flatten().cloned().collect();
    let catalog_ids = catalog.map(|rules| rules.into_iter().map(|(id, _)| id).collect());
    let mut req = req;
    req.rules = resolve_rules(req.rules, catalog_ids, &pack.name, &profile)?;
    let rule_texts: Vec<Option<sqlx::types::Json<&RuleText>>> = req
        .rules
        .iter()
        .map(|r| texts.get(r).map(sqlx::types::Json))
        .collect();
    // Rules passing on the target image need no agent (DESIGN T4).
    let passing: HashSet<String> = match (packs.baseline_scan(), &pack.checks.datastream) {
        (Some(scan), Some(ds)) => {
            let ids = scan.passing(ds, &profile).await?;
            req.rules
                .iter()
                .filter(|r| ids.contains(&pack.checks.xccdf_rule_id(r)))
                .cloned()
                .collect()
        }
        _ => HashSet::new(),
    };

    let needs: Vec<TargetClass> = req.rules.iter().map(|r| pack.target_need(r)).collect();
    // Rules no live agent can serve are recorded, not queued (DESIGN T7).
    let unserved: HashSet<String> =
        if needs.contains(&TargetClass::Vm) && !vm_agent_live(leases).await {
            req.rules
                .iter()
                .zip(&needs)
                .filter(|(r, need)| **need == TargetClass::Vm && !passing.contains(*r))
                .map(|(r, _)| r.clone())
                .collect()
        } else {
            HashSet::new()
        };

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
    let need_labels: Vec<&str> = needs.iter().map(|c| c.as_str()).collect();
    let rows: Vec<(i64, i32)> = sqlx::query_as(
        "INSERT INTO work_items (run_id, rule_id, family, ordinal, groups, hold_group, hold_threshold, rule_text,
                                 target_need)
         SELECT $1, u.rule, u.family, (u.ord - 1)::int,
                CASE WHEN u.groups = '' THEN '{}'::text[] ELSE string_to_array(u.groups, E'\\t') END,
                u.hold_group, u.hold_threshold, u.rule_text, u.need
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::jsonb[], $8::text[])
              WITH ORDINALITY AS u(rule, family, groups, hold_group, hold_threshold, rule_text, need, ord)
         ORDER BY u.ord
         RETURNING id, ordinal",
    )
    .bind(run)
    .bind(&req.rules)
    .bind(&families)
    .bind(&groups)
    .bind(&hold_groups)
    .bind(&hold_thresholds)
    .bind(&rule_texts)
    .bind(&need_labels)
    .fetch_all(&mut *tx)
    .await?;
    if !unserved.is_empty() {
        let unserved: Vec<&str> = unserved.iter().map(String::as_str).collect();
        let outcome = Outcome::NeedsTarget {
            target: TargetClass::Vm,
        };
        sqlx::query(
            "UPDATE work_items SET state = 'done', outcome = $3, reason = $4,
                    attempts = 0, finished_at = now()
             WHERE run_id = $1 AND rule_id = ANY($2)",
        )
        .bind(run)
        .bind(&unserved)
        .bind(outcome.kind())
        .bind(outcome.reason_label())
        .execute(&mut *tx)
        .await?;
    }
    if !passing.is_empty() {
        let passing: Vec<&str> = passing.iter().map(String::as_str).collect();
        sqlx::query(
            "UPDATE work_items SET state = 'done', outcome = 'already_passing', attempts = 0,
                    finished_at = now()
             WHERE run_id = $1 AND rule_id = ANY($2)",
        )
        .bind(run)
        .bind(&passing)
        .execute(&mut *tx)
        .await?;
    }
    if !passing.is_empty() || !unserved.is_empty() {
        sqlx::query(
            "UPDATE runs SET status = 'completed', finished_at = now()
             WHERE id = $1 AND NOT EXISTS
               (SELECT 1 FROM work_items WHERE run_id = $1 AND state = 'pending')",
        )
        .bind(run)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::info!(run, tasks = n, already_passing = passing.len(), needs_target = unserved.len(), skill_pack = %req.skill_pack, %profile, "run submitted");
    if !unserved.is_empty() {
        tracing::warn!(run, rules = unserved.len(), "no live agent has a vm target: rules that need one are recorded needs_target, not queued");
    }

    let budget = leases.settings().lease_loss_budget;
    let planned = rows
        .into_iter()
        .filter(|(_, ordinal)| {
            let rule = &req.rules[*ordinal as usize];
            !passing.contains(rule) && !unserved.contains(rule)
        })
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
                rule_text: texts.get(&req.rules[i]).cloned(),
                job: None,
            };
            let p = &placements[i];
            planned_task(
                task,
                ordinal,
                req.priority,
                budget,
                &p.groups,
                p.hold.clone(),
                needs[i],
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
        already_passing: passing.len() as u64,
        needs_target: unserved.len() as u64,
    })
}

/// Whether an agent whose targets are VMs is live by Redis's clock. When
/// Redis cannot say, the rules stay queued (reconciliation puts them in the
/// VM-only set once Redis is back) rather than be written off.
async fn vm_agent_live(leases: &LeaseClient) -> bool {
    let window = leases.settings().alive_window_ms();
    match leases.live_vm_agents(window).await {
        Ok(agents) => !agents.is_empty(),
        Err(error) => {
            tracing::warn!(%error, "agent presence unavailable; rules that need a vm stay queued");
            true
        }
    }
}

/// The rules a run covers: all of the profile's when none were named;
/// named ones must belong to the profile when the pack has SCAP content.
fn resolve_rules(
    named: Vec<String>,
    catalog: Option<Vec<String>>,
    pack: &str,
    profile: &str,
) -> Result<Vec<String>, CoordinatorError> {
    match (named.is_empty(), catalog) {
        (true, Some(all)) if all.is_empty() => Err(CoordinatorError::Invalid(format!(
            "profile {profile:?} of skill pack {pack} selects no rules"
        ))),
        (true, Some(all)) => Ok(all),
        (true, None) => Err(CoordinatorError::Invalid(format!(
            "rules is empty: skill pack {pack} has no SCAP content to take the profile's rules from, so name at least one rule id"
        ))),
        (false, Some(all)) => {
            let known: std::collections::HashSet<&str> = all.iter().map(String::as_str).collect();
            let unknown: Vec<&str> = named
                .iter()
                .map(String::as_str)
                .filter(|r| !known.contains(r))
                .collect();
            if unknown.is_empty() {
                Ok(named)
            } else {
                Err(CoordinatorError::Invalid(format!(
                    "{} rule(s) are not in profile {profile:?} of skill pack {pack} ({} rules): {}",
                    unknown.len(),
                    all.len(),
                    unknown.iter().take(10).copied().collect::<Vec<_>>().join(", ")
                )))
            }
        }
        (false, None) => Ok(named),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_rules_means_the_whole_profile_when_the_pack_has_content() {
        let all = v(&["a", "b"]);
        assert_eq!(
            resolve_rules(vec![], Some(all.clone()), "p", "s").unwrap(),
            all
        );
        let err = resolve_rules(vec![], None, "sim", "s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("name at least one rule"), "{err}");
    }

    #[test]
    fn named_rules_must_be_in_the_profile() {
        let all = v(&["a", "b"]);
        assert_eq!(
            resolve_rules(v(&["b"]), Some(all.clone()), "p", "s").unwrap(),
            v(&["b"])
        );
        let err = resolve_rules(v(&["b", "zz"]), Some(all), "p", "s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("zz") && err.contains("2 rules"), "{err}");
        assert_eq!(
            resolve_rules(v(&["x"]), None, "sim", "s").unwrap(),
            v(&["x"])
        );
    }
}
