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

use super::compare::Comparison;
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
    fn touched<'a>(&self, c: &'a Comparison) -> Vec<&'a str> {
        let rule_scoped = self.kind.as_deref() == Some("skill")
            || self
                .scope
                .as_deref()
                .is_some_and(|s| s.starts_with("rule:"));
        c.regressed()
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

pub(super) async fn revert_regressed(
    db: &mut PgConnection,
    run: i64,
    comparison: &Comparison,
    dir: &Path,
    dry_run: bool,
) -> Result<Vec<LedgerLine>, CoordinatorError> {
    if comparison.summary.regressions == 0 {
        return Ok(Vec::new());
    }
    if let Some(why) = &comparison.summary.revert_withheld {
        tracing::warn!(
            run,
            regressions = comparison.summary.regressions,
            why,
            "reverts withheld"
        );
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
        let touched = a.touched(comparison);
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
