//! Automatic revert (DESIGN D8): a promotion made after the previous
//! comparable run whose rules regressed in this run is undone by a new
//! fast-forward commit (the file goes back to what `main` held before the
//! promotion), and the ledger says why.
//!
//! A promotion touches: its rule, for a skill or a rule-scoped lesson; every
//! rule of its family otherwise. Only comparable regressions count, and a
//! run with too many rules not comparable reverts nothing (`comparable.rs`).

use std::path::Path;

use fleet_common::api::LedgerLine;
use fleet_knowledge::{DreamAction, DreamTrailers};
use sqlx::PgConnection;

use super::compare::{Comparison, RuleChange};
use super::git;
use super::promote::{set_commits, set_status};
use crate::CoordinatorError;

#[derive(sqlx::FromRow)]
struct Applied {
    id: i64,
    lesson_id: String,
    kind: Option<String>,
    family: Option<String>,
    rule_id: Option<String>,
    path: Option<String>,
    commit_before: Option<String>,
    scope: Option<String>,
}

impl Applied {
    /// The regressed rules this promotion touches.
    fn touched<'a>(&self, regressed: &[&'a RuleChange]) -> Vec<&'a str> {
        let rule_scoped = self.kind.as_deref() == Some("skill")
            || self
                .scope
                .as_deref()
                .is_some_and(|s| s.starts_with("rule:"));
        regressed
            .iter()
            .filter(|ch| {
                if rule_scoped {
                    self.rule_id.as_deref() == Some(ch.rule.as_str())
                } else {
                    self.family.as_deref() == Some(ch.family.as_str())
                }
            })
            .map(|ch| ch.rule.as_str())
            .collect()
    }
}

/// The regressions this run may revert for: none when too many of its
/// rules were not comparable (an outage is not a regression, D6).
fn revertible(c: &Comparison) -> Vec<&RuleChange> {
    if c.summary.revert_withheld.is_some() {
        return Vec::new();
    }
    c.regressed().collect()
}

pub(super) async fn revert_regressed(
    db: &mut PgConnection,
    run: i64,
    comparison: &Comparison,
    dir: &Path,
    dry_run: bool,
) -> Result<Vec<LedgerLine>, CoordinatorError> {
    let regressed = revertible(comparison);
    if regressed.is_empty() {
        if let Some(why) = comparison.summary.revert_withheld.as_ref() {
            tracing::warn!(
                run,
                regressions = comparison.summary.regressions,
                why,
                "reverts withheld"
            );
        }
        return Ok(Vec::new());
    }
    let previous = comparison.summary.previous_run.0;
    let applied: Vec<Applied> = sqlx::query_as(
        "SELECT p.id, p.lesson_id, p.kind, p.family, p.rule_id, p.path, p.commit_before, l.scope
         FROM promotions p LEFT JOIN lessons l ON l.id = p.lesson_id
         WHERE p.run_id = $1 AND p.action IN ('promote', 'merge') AND p.commit_after IS NOT NULL
           AND p.reverted_by IS NULL
         ORDER BY COALESCE(p.decided_at, p.created_at) DESC, p.id DESC",
    )
    .bind(previous)
    .fetch_all(&mut *db)
    .await?;
    // Newest write first (an approval writes when it is decided): a merge
    // into a file promoted or merged into earlier is undone before that, so
    // the file ends as it was before all of them.
    let mut lines = Vec::new();
    for a in applied {
        let touched = a.touched(&regressed);
        let Some(path) = a.path.clone().filter(|_| !touched.is_empty()) else {
            continue;
        };
        let reason = format!(
            "rules it touches regressed in run {run} against run {previous}: {}",
            touched.join(", ")
        );
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO promotions (run_id, lesson_id, verdict, gates, reason, kind, family,
                                     rule_id, path, action)
             VALUES ($1, $2, 'APPLY', '[]', $3, $4, $5, $6, $7, 'revert') RETURNING id",
        )
        .bind(run)
        .bind(&a.lesson_id)
        .bind(&reason)
        .bind(&a.kind)
        .bind(&a.family)
        .bind(&a.rule_id)
        .bind(&path)
        .fetch_one(&mut *db)
        .await?;
        let mut commit = None;
        if !dry_run {
            // What main held at that path before the promotion, if anything.
            let main = git::open_main(dir).await?;
            let old = match &a.commit_before {
                Some(c) => main.file_at(c, &path).map_err(git::error)?,
                None => None,
            };
            let message = DreamTrailers::new(DreamAction::Revert, run, id).message(&format!(
                "dream: revert {} (ledger #{}, by #{id}): {reason}",
                a.lesson_id, a.id
            ));
            let (before, after) = git::write(dir, path, old, message).await?;
            set_commits(db, id, before.as_deref(), &after).await?;
            commit = Some(after);
        }
        sqlx::query("UPDATE promotions SET reverted_by = $2 WHERE id = $1")
            .bind(a.id)
            .bind(id)
            .execute(&mut *db)
            .await?;
        set_status(db, &a.lesson_id, "reverted").await?;
        tracing::warn!(
            run,
            lesson = a.lesson_id,
            ledger = a.id,
            reason,
            "promotion reverted"
        );
        lines.push(LedgerLine {
            id: (!dry_run).then_some(id),
            lesson: a.lesson_id,
            kind: a.kind.unwrap_or_default(),
            action: "revert".into(),
            verdict: "APPLY".into(),
            reason,
            commit,
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use fleet_common::api::RunComparison;
    use fleet_common::RunId;

    use super::*;

    fn with_regression(revert_withheld: Option<String>) -> Comparison {
        Comparison {
            summary: RunComparison {
                previous_run: RunId(1),
                wins: 0,
                regressions: 1,
                fix_rate: None,
                previous_fix_rate: None,
                first_try_rate: None,
                previous_first_try_rate: None,
                changes: Vec::new(),
                not_comparable: [("llm_unavailable".to_owned(), 9)].into(),
                previous_not_comparable: 0,
                revert_withheld,
            },
            changes: vec![RuleChange {
                rule: "sshd_a".into(),
                family: "sshd".into(),
                regression: true,
                lessons_shown: Vec::new(),
            }],
        }
    }

    #[test]
    fn a_real_regression_in_a_run_that_was_mostly_an_outage_reverts_nothing() {
        assert_eq!(revertible(&with_regression(None)).len(), 1);
        let withheld = with_regression(Some("9 of 10 rules were not comparable".into()));
        assert!(revertible(&withheld).is_empty());
    }
}
