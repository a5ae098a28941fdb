//! Regression analysis (DESIGN D6): a run against the previous comparable
//! run — the latest earlier completed run of the same skill pack and
//! profile. A **win** is a rule fixed now that was not fixed then; a
//! **regression** the reverse. Rules in only one of the two runs, rules not
//! finished in either, and rules whose outcome in either run is not
//! comparable (`comparable.rs`: an outage is not a regression) are left
//! out; the last are counted apart, by reason.

use std::collections::HashMap;

use fleet_common::api::RunComparison;
use sqlx::types::Json;
use sqlx::PgConnection;

use super::comparable::{judge, Standing};

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

/// Compares `run` with `previous`; above `max_not_comparable` (a share of
/// the run's rules) the comparison withholds reverts.
pub async fn compare(
    db: &mut PgConnection,
    run: i64,
    previous: i64,
    max_not_comparable: f64,
) -> Result<Comparison, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT n.rule_id, n.family, n.outcome, n.reason, p.outcome, p.reason
         FROM work_items n
         LEFT JOIN work_items p ON p.rule_id = n.rule_id AND p.run_id = $2 AND p.state = 'done'
         WHERE n.run_id = $1 AND n.state = 'done' AND n.outcome IS NOT NULL
         ORDER BY n.rule_id",
    )
    .bind(run)
    .bind(previous)
    .fetch_all(&mut *db)
    .await?;
    let families: HashMap<String, String> =
        rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
    let judged = judge(
        rows.into_iter()
            .map(|(rule, _, outcome, reason, p_outcome, p_reason)| {
                let now = Standing::of(&outcome, reason.as_deref());
                let previous = p_outcome.map(|o| Standing::of(&o, p_reason.as_deref()));
                (rule, now, previous)
            }),
        max_not_comparable,
    );
    let changed: Vec<&String> = judged.wins.iter().chain(&judged.regressions).collect();
    let shown: HashMap<String, Vec<String>> = sqlx::query_as::<_, (String, Vec<String>)>(
        "SELECT n.rule_id,
                COALESCE((SELECT array_agg(DISTINCT la.lesson_id ORDER BY la.lesson_id)
                          FROM attempts a JOIN lesson_attributions la ON la.attempt_id = a.id
                          WHERE a.work_item_id = n.id AND a.epoch = n.accepted_epoch), '{}')
         FROM work_items n WHERE n.run_id = $1 AND n.rule_id = ANY($2)",
    )
    .bind(run)
    .bind(&changed)
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .collect();
    let change = |rule: &String, regression: bool| RuleChange {
        rule: rule.clone(),
        family: families.get(rule).cloned().unwrap_or_default(),
        regression,
        lessons_shown: shown.get(rule).cloned().unwrap_or_default(),
    };
    let mut changes: Vec<RuleChange> = judged
        .wins
        .iter()
        .map(|r| change(r, false))
        .chain(judged.regressions.iter().map(|r| change(r, true)))
        .collect();
    changes.sort_by(|a, b| a.rule.cmp(&b.rule));
    let (fix_rate, first_try_rate) = rates(db, run).await?;
    let (previous_fix_rate, previous_first_try_rate) = rates(db, previous).await?;
    Ok(Comparison {
        summary: RunComparison {
            previous_run: fleet_common::RunId(previous),
            wins: judged.wins.len() as u64,
            regressions: judged.regressions.len() as u64,
            fix_rate,
            previous_fix_rate,
            first_try_rate,
            previous_first_try_rate,
            changes: changes.iter().map(RuleChange::info).collect(),
            not_comparable: judged.not_comparable,
            previous_not_comparable: judged.previous_not_comparable,
            revert_withheld: judged.revert_withheld,
        },
        changes,
    })
}

/// Stores the comparison (replacing an earlier one of the same run).
pub async fn store(db: &mut PgConnection, run: i64, c: &Comparison) -> Result<(), sqlx::Error> {
    let s = &c.summary;
    sqlx::query(
        "INSERT INTO run_comparisons (run_id, previous_run_id, wins, regressions, fix_rate,
                                      previous_fix_rate, first_try_rate, previous_first_try_rate,
                                      not_comparable, previous_not_comparable, revert_withheld)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (run_id) DO UPDATE SET previous_run_id = EXCLUDED.previous_run_id,
           wins = EXCLUDED.wins, regressions = EXCLUDED.regressions, fix_rate = EXCLUDED.fix_rate,
           previous_fix_rate = EXCLUDED.previous_fix_rate, first_try_rate = EXCLUDED.first_try_rate,
           previous_first_try_rate = EXCLUDED.previous_first_try_rate,
           not_comparable = EXCLUDED.not_comparable,
           previous_not_comparable = EXCLUDED.previous_not_comparable,
           revert_withheld = EXCLUDED.revert_withheld, computed_at = now()",
    )
    .bind(run)
    .bind(s.previous_run.0)
    .bind(s.wins as i32)
    .bind(s.regressions as i32)
    .bind(s.fix_rate)
    .bind(s.previous_fix_rate)
    .bind(s.first_try_rate)
    .bind(s.previous_first_try_rate)
    .bind(Json(&s.not_comparable))
    .bind(s.previous_not_comparable as i32)
    .bind(&s.revert_withheld)
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
    not_comparable: Json<std::collections::BTreeMap<String, u64>>,
    previous_not_comparable: i32,
    revert_withheld: Option<String>,
}

/// The stored comparison of `run`, for the run report.
pub async fn load(db: &mut PgConnection, run: i64) -> Result<Option<RunComparison>, sqlx::Error> {
    let row: Option<Stored> = sqlx::query_as(
        "SELECT previous_run_id, wins, regressions, fix_rate, previous_fix_rate,
                first_try_rate, previous_first_try_rate, not_comparable,
                previous_not_comparable, revert_withheld
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
        not_comparable: r.not_comparable.0,
        previous_not_comparable: r.previous_not_comparable.max(0) as u64,
        revert_withheld: r.revert_withheld,
    }))
}
