//! After a composition check (DESIGN H3): each skill that interfered (a
//! later section made another rule fail again that passed right after its
//! own section; when no culprit was found, the victim's own skill) or that
//! broke health leaves the bundle, with an open `bundle_exclude` ledger
//! entry holding the evidence. An operator decides in `promotions`:
//! approve puts the skill back into the bundle, reject removes it from
//! `main`. Bundles skip rules with an open entry ([`excluded_rules`]).

use std::collections::BTreeSet;

use fleet_common::host::{HostJob, HostReport};
use fleet_common::RunId;
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;

use super::results::ACCEPTED_REPORT;
use crate::error::CoordinatorError;

/// Ledger action of a skill taken out of the bundle.
pub const BUNDLE_EXCLUDE: &str = "bundle_exclude";

/// One skill to take out, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub rule: String,
    pub reason: String,
    pub evidence: serde_json::Value,
}

/// What a compose report says must leave the bundle, pure.
pub fn exclusions(report: &HostReport) -> Vec<Exclusion> {
    let mut out = Vec::new();
    for i in &report.interference {
        // The culprit leaves when it is known (its victim then passes
        // again); otherwise the victim, whose fix does not hold.
        let (rule, reason) = match &i.broken_by {
            Some(culprit) => (
                culprit.clone(),
                format!(
                    "interference: applying {culprit} makes {} fail again (it passed right after its own section)",
                    i.rule
                ),
            ),
            None => (
                i.rule.clone(),
                format!(
                    "interference: {} passed right after its section and fails after the bundle; the culprit was not found",
                    i.rule
                ),
            ),
        };
        out.push(Exclusion {
            rule,
            reason,
            evidence: json!({ "check": "interference", "victim": i.rule, "broken_by": i.broken_by }),
        });
    }
    for s in report
        .sections
        .iter()
        .filter(|s| !s.health_failed.is_empty())
    {
        out.push(Exclusion {
            rule: s.rule.clone(),
            reason: format!(
                "health: applying {} in the bundle failed health checks {}",
                s.rule,
                s.health_failed.join(", ")
            ),
            evidence: json!({ "check": "health", "health_failed": s.health_failed, "exit_code": s.exit_code }),
        });
    }
    out.sort_by(|a, b| a.rule.cmp(&b.rule));
    out.dedup_by(|a, b| a.rule == b.rule);
    out
}

/// Reviews every finished compose run not reviewed yet; returns how many
/// ledger entries were opened.
pub async fn review_compose_runs(pool: &PgPool) -> Result<usize, CoordinatorError> {
    let runs: Vec<(i64, Json<HostJob>, Option<Json<HostReport>>)> = sqlx::query_as(&format!(
        "SELECT r.id, w.job,
                {ACCEPTED_REPORT}
         FROM runs r JOIN work_items w ON w.run_id = r.id
         WHERE r.kind = 'compose' AND r.status = 'completed' AND r.reviewed_at IS NULL
         ORDER BY r.id"
    ))
    .fetch_all(pool)
    .await?;
    let mut opened = 0;
    for (run, job, report) in runs {
        let mut tx = pool.begin().await?;
        // Whoever marks the run reviewed first writes its entries.
        let claimed = sqlx::query(
            "UPDATE runs SET reviewed_at = now() WHERE id = $1 AND reviewed_at IS NULL",
        )
        .bind(run)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            continue;
        }
        let bundle = job.0.bundle().clone();
        for x in report.map(|r| exclusions(&r.0)).unwrap_or_default() {
            let blob = bundle
                .section(&x.rule)
                .map(|s| s.provenance.blob.clone())
                .unwrap_or_default();
            let gates = json!({ "bundle": x.evidence, "compose_run": run, "blob": blob });
            let n = sqlx::query(
                "INSERT INTO promotions (run_id, lesson_id, verdict, gates, commit_before, reason,
                                         action, kind, rule_id, path, open)
                 SELECT $1, 'skill:' || $2, 'ESCALATE', $3, $4, $5, $6, 'skill', $2,
                        'skills/' || $2 || '.sh', true
                 WHERE NOT EXISTS (SELECT 1 FROM promotions
                                   WHERE open AND action = $6 AND rule_id = $2)",
            )
            .bind(run)
            .bind(&x.rule)
            .bind(&gates)
            .bind(&bundle.main_commit)
            .bind(&x.reason)
            .bind(BUNDLE_EXCLUDE)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                tracing::warn!(run, rule = %x.rule, reason = %x.reason, "skill taken out of the bundle until an operator decides");
            }
            opened += n as usize;
        }
        tx.commit().await?;
    }
    Ok(opened)
}

/// Rules whose skills are out of the bundle, waiting for an operator.
pub async fn excluded_rules(pool: &PgPool) -> Result<BTreeSet<String>, CoordinatorError> {
    let rules: Vec<String> = sqlx::query_scalar(
        "SELECT rule_id FROM promotions WHERE open AND action = $1 AND rule_id IS NOT NULL",
    )
    .bind(BUNDLE_EXCLUDE)
    .fetch_all(pool)
    .await?;
    Ok(rules.into_iter().collect())
}

/// The compose run that followed learning run `run`, if one was submitted.
pub async fn compose_run_after(
    pool: &PgPool,
    run: RunId,
) -> Result<Option<RunId>, CoordinatorError> {
    let id: Option<i64> =
        sqlx::query_scalar("SELECT max(id) FROM runs WHERE kind = 'compose' AND after_run = $1")
            .bind(run.0)
            .fetch_one(pool)
            .await?;
    Ok(id.map(RunId))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::host::{Interference, SectionResult};

    #[test]
    fn interference_and_health_failures_leave_the_bundle() {
        let report = HostReport {
            interference: vec![Interference {
                rule: "a".into(),
                broken_by: Some("b".into()),
            }],
            sections: vec![
                SectionResult {
                    rule: "b".into(),
                    exit_code: Some(0),
                    health_failed: vec![],
                    passed: Some(true),
                    duration_ms: 1,
                },
                SectionResult {
                    rule: "c".into(),
                    exit_code: Some(0),
                    health_failed: vec!["shell".into()],
                    passed: None,
                    duration_ms: 1,
                },
            ],
            ..HostReport::default()
        };
        let x = exclusions(&report);
        let rules: Vec<&str> = x.iter().map(|e| e.rule.as_str()).collect();
        assert_eq!(rules, ["b", "c"], "the culprit b leaves, not its victim a");
        assert!(
            x[0].reason.contains("applying b makes a fail"),
            "{}",
            x[0].reason
        );
        assert!(x[1].reason.contains("shell"));
        assert!(exclusions(&HostReport::default()).is_empty());
    }
}
