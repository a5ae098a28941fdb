//! Regression analysis (DESIGN D6): a run against the previous comparable
//! run — the latest earlier completed run of the same skill pack and
//! profile. A **win** is a rule fixed now that was not fixed then; a
//! **regression** the reverse. Rules in only one of the two runs, and rules
//! not finished in either, are left out.

use fleet_common::api::RunComparison;
use sqlx::PgConnection;

/// One rule whose outcome changed, and what its prompts showed.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleChange {
    pub rule: String,
    pub family: String,
    pub regression: bool,
    pub lessons_shown: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub summary: RunComparison,
    pub changes: Vec<RuleChange>,
}

impl RuleChange {
    fn info(&self) -> fleet_common::api::RuleChange {
        fleet_common::api::RuleChange {
            rule: self.rule.clone(),
            change: if self.regression { "regression" } else { "win" }.into(),
            lessons_shown: self.lessons_shown.clone(),
        }
    }
}

impl Comparison {
    /// Rules that regressed.
    pub fn regressed(&self) -> impl Iterator<Item = &RuleChange> {
        self.changes.iter().filter(|c| c.regression)
    }
}

/// The latest completed run before `run` with the same pack and profile.
pub async fn previous_comparable(
    db: &mut PgConnection,
    run: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT p.id FROM runs r JOIN runs p
           ON p.skill_pack = r.skill_pack AND p.profile = r.profile
          AND p.id < r.id AND p.status = 'completed' AND p.kind = 'learn'
         WHERE r.id = $1 ORDER BY p.id DESC LIMIT 1",
    )
    .bind(run)
    .fetch_optional(&mut *db)
    .await
}

/// fixed / (fixed + escalated), fixed first try / fixed.
pub(super) async fn rates(
    db: &mut PgConnection,
    run: i64,
) -> Result<(Option<f64>, Option<f64>), sqlx::Error> {
    let (fixed, first, escalated): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE outcome = 'fixed'),
                count(*) FILTER (WHERE outcome = 'fixed' AND fixed_attempt = 1),
                count(*) FILTER (WHERE outcome = 'escalated')
         FROM work_items WHERE run_id = $1",
    )
    .bind(run)
    .fetch_one(&mut *db)
    .await?;
    let fix_rate = (fixed + escalated > 0).then(|| fixed as f64 / (fixed + escalated) as f64);
    let first_try = (fixed > 0).then(|| first as f64 / fixed as f64);
    Ok((fix_rate, first_try))
}

/// Compares `run` with `previous`.
pub async fn compare(
    db: &mut PgConnection,
    run: i64,
    previous: i64,
) -> Result<Comparison, sqlx::Error> {
    let rows: Vec<(String, String, bool, Vec<String>)> = sqlx::query_as(
        "SELECT n.rule_id, n.family, p.outcome = 'fixed' AS was_fixed,
                COALESCE((SELECT array_agg(DISTINCT la.lesson_id ORDER BY la.lesson_id)
                          FROM attempts a JOIN lesson_attributions la ON la.attempt_id = a.id
                          WHERE a.work_item_id = n.id AND a.epoch = n.accepted_epoch), '{}')
         FROM work_items n JOIN work_items p ON p.rule_id = n.rule_id AND p.run_id = $2
         WHERE n.run_id = $1 AND n.state = 'done' AND p.state = 'done'
           AND (n.outcome = 'fixed') <> (p.outcome = 'fixed')
         ORDER BY n.rule_id",
    )
    .bind(run)
    .bind(previous)
    .fetch_all(&mut *db)
    .await?;
    let changes: Vec<RuleChange> = rows
        .into_iter()
        .map(|(rule, family, was_fixed, lessons_shown)| RuleChange {
            rule,
            family,
            regression: was_fixed,
            lessons_shown,
        })
        .collect();
    let regressions = changes.iter().filter(|c| c.regression).count() as u64;
    let wins = changes.len() as u64 - regressions;
    let (fix_rate, first_try_rate) = rates(db, run).await?;
    let (previous_fix_rate, previous_first_try_rate) = rates(db, previous).await?;
    Ok(Comparison {
        summary: RunComparison {
            previous_run: fleet_common::RunId(previous),
            wins,
            regressions,
            fix_rate,
            previous_fix_rate,
            first_try_rate,
            previous_first_try_rate,
            changes: changes.iter().map(RuleChange::info).collect(),
        },
        changes,
    })
}

/// Stores the comparison (replacing an earlier one of the same run).
pub async fn store(db: &mut PgConnection, run: i64, c: &Comparison) -> Result<(), sqlx::Error> {
    let s = &c.summary;
    sqlx::query(
        "INSERT INTO run_comparisons (run_id, previous_run_id, wins, regressions, fix_rate,
                                      previous_fix_rate, first_try_rate, previous_first_try_rate)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (run_id) DO UPDATE SET previous_run_id = EXCLUDED.previous_run_id,
           wins = EXCLUDED.wins, regressions = EXCLUDED.regressions, fix_rate = EXCLUDED.fix_rate,
           previous_fix_rate = EXCLUDED.previous_fix_rate, first_try_rate = EXCLUDED.first_try_rate,
           previous_first_try_rate = EXCLUDED.previous_first_try_rate, computed_at = now()",
    )
    .bind(run)
    .bind(s.previous_run.0)
    .bind(s.wins as i32)
    .bind(s.regressions as i32)
    .bind(s.fix_rate)
    .bind(s.previous_fix_rate)
    .bind(s.first_try_rate)
    .bind(s.previous_first_try_rate)
    .execute(&mut *db)
    .await?;
    sqlx::query("DELETE FROM rule_changes WHERE run_id = $1")
        .bind(run)
        .execute(&mut *db)
        .await?;
    let rules: Vec<&str> = c.changes.iter().map(|ch| ch.rule.as_str()).collect();
    let kinds: Vec<&str> = c
        .changes
        .iter()
        .map(|ch| if ch.regression { "regression" } else { "win" })
        .collect();
    // Lesson lists are ragged; one JSON array per rule, unpacked in SQL.
    let shown: Vec<serde_json::Value> = c
        .changes
        .iter()
        .map(|ch| serde_json::json!(ch.lessons_shown))
        .collect();
    sqlx::query(
        "INSERT INTO rule_changes (run_id, rule_id, change, lessons_shown)
         SELECT $1, u.rule, u.change,
                ARRAY(SELECT e.x FROM jsonb_array_elements_text(u.shown) WITH ORDINALITY AS e(x, i)
                      ORDER BY e.i)
         FROM UNNEST($2::text[], $3::text[], $4::jsonb[]) AS u(rule, change, shown)",
    )
    .bind(run)
    .bind(&rules)
    .bind(&kinds)
    .bind(&shown)
    .execute(&mut *db)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Stored {
    previous_run_id: i64,
    wins: i32,
    regressions: i32,
    fix_rate: Option<f64>,
    previous_fix_rate: Option<f64>,
    first_try_rate: Option<f64>,
    previous_first_try_rate: Option<f64>,
}

/// The stored comparison of `run`, for the run report.
pub async fn load(db: &mut PgConnection, run: i64) -> Result<Option<RunComparison>, sqlx::Error> {
    let row: Option<Stored> = sqlx::query_as(
        "SELECT previous_run_id, wins, regressions, fix_rate, previous_fix_rate,
                first_try_rate, previous_first_try_rate
         FROM run_comparisons WHERE run_id = $1",
    )
    .bind(run)
    .fetch_optional(&mut *db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let changes: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT rule_id, change, lessons_shown FROM rule_changes WHERE run_id = $1 ORDER BY rule_id",
    )
    .bind(run)
    .fetch_all(&mut *db)
    .await?;
    Ok(Some(RunComparison {
        previous_run: fleet_common::RunId(r.previous_run_id),
        wins: r.wins.max(0) as u64,
        regressions: r.regressions.max(0) as u64,
        fix_rate: r.fix_rate,
        previous_fix_rate: r.previous_fix_rate,
        first_try_rate: r.first_try_rate,
        previous_first_try_rate: r.previous_first_try_rate,
        changes: changes
            .into_iter()
            .map(
                |(rule, change, lessons_shown)| fleet_common::api::RuleChange {
                    rule,
                    change,
                    lessons_shown,
                },
            )
            .collect(),
    }))
}
