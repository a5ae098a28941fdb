//! Credit from all data (D1) and the ranking agents read (K4): every
//! evaluated attempt becomes a trial, `credit::compute` scores the lessons
//! on `main`, `lesson_credit` is replaced in full, and `ranking.json` is
//! committed to `main` when it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use fleet_knowledge::layout::RANKING_PATH;
use fleet_knowledge::{LessonKind, RankedLesson, Ranking};
use sqlx::PgConnection;

use super::credit::{self, Credit, Trial};
use super::git;
use crate::CoordinatorError;

/// Every evaluated attempt with the lessons its prompt showed. A replay of
/// a skill from `main` (DESIGN H1) had no prompt: it is evidence neither
/// for nor against any lesson, and is no trial on either side.
pub async fn trials(db: &mut PgConnection) -> Result<Vec<Trial>, sqlx::Error> {
    let rows: Vec<(String, String, bool, Vec<String>)> = sqlx::query_as(
        "SELECT w.rule_id, w.family,
                COALESCE(a.eval_status = 'pass' AND a.health_ok, false),
                COALESCE(array_agg(la.lesson_id) FILTER (WHERE la.lesson_id IS NOT NULL), '{}')
         FROM attempts a JOIN work_items w ON w.id = a.work_item_id
         LEFT JOIN lesson_attributions la ON la.attempt_id = a.id
         WHERE a.eval_status IS NOT NULL AND a.script_source IS DISTINCT FROM 'skill'
         GROUP BY a.id, w.rule_id, w.family",
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(rule, family, won, shown)| Trial {
            rule,
            family,
            won,
            shown,
        })
        .collect())
}

/// The ranking of the lessons in `known` from `credit`, as published.
pub fn ranking_of(credit: &Credit, known: &BTreeMap<String, BTreeSet<String>>) -> Ranking {
    let on_main = |f: &str, id: &str| known.get(f).is_some_and(|ids| ids.contains(id));
    Ranking {
        lessons: credit
            .lessons
            .iter()
            .filter(|c| on_main(&c.family, &c.lesson))
            .map(|c| RankedLesson {
                family: c.family.clone(),
                rule: c.rule.clone(),
                id: c.lesson.clone(),
                score: round(c.score),
            })
            .collect(),
        priors: credit
            .priors
            .iter()
            .map(|(f, p)| (f.clone(), round(*p)))
            .collect(),
        ..Ranking::default()
    }
}

/// Six decimals: enough to rank, and the file does not churn on noise.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Recomputes credit, stores it, and publishes the ranking (unless
/// `dry_run`). Returns whether `ranking.json` changed.
pub(super) async fn publish(
    db: &mut PgConnection,
    dir: &Path,
    run: i64,
    dry_run: bool,
) -> Result<bool, CoordinatorError> {
    let trials = trials(db).await?;
    let main = git::open_main(dir).await?;
    let (lessons, bad) = main.lessons().map_err(git::error)?;
    for (path, e) in &bad {
        tracing::warn!(path, error = %e, "unparseable lesson on main; not ranked");
    }
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in lessons.into_iter().filter(|l| l.kind != LessonKind::Skill) {
        known.entry(l.family).or_default().insert(l.id);
    }
    let credit = credit::compute(&trials, &known);

    sqlx::query("DELETE FROM lesson_credit")
        .execute(&mut *db)
        .await?;
    let rows = &credit.lessons;
    let col = |f: fn(&credit::LessonCredit) -> String| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO lesson_credit (family, rule_id, lesson_id, shown, wins, alpha, beta, score)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                              $6::float8[], $7::float8[], $8::float8[])",
    )
    .bind(col(|c| c.family.clone()))
    .bind(col(|c| c.rule.clone().unwrap_or_default()))
    .bind(col(|c| c.lesson.clone()))
    .bind(rows.iter().map(|c| c.shown as i64).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.wins as i64).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.alpha).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.beta).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.score).collect::<Vec<_>>())
    .execute(&mut *db)
    .await?;

    let ranking = ranking_of(&credit, &known);
    let current = main.ranking().unwrap_or_default();
    if current == ranking {
        return Ok(false);
    }
    if !dry_run {
        let message = format!("dream: ranking after run {run}");
        git::write(
            dir,
            RANKING_PATH.to_owned(),
            Some(ranking.to_json()),
            message,
        )
        .await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lessons_on_main_are_ranked_and_scores_are_rounded() {
        let trials = vec![
            Trial {
                rule: "r".into(),
                family: "f".into(),
                won: true,
                shown: vec!["on-main".into(), "gone".into()],
            },
            Trial {
                rule: "r".into(),
                family: "f".into(),
                won: false,
                shown: vec![],
            },
        ];
        let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        known
            .entry("f".into())
            .or_default()
            .insert("on-main".into());
        let credit = credit::compute(&trials, &known);
        let r = ranking_of(&credit, &known);
        let ids: Vec<&str> = r.lessons.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["on-main"]);
        let score = r.lessons[0].score;
        assert_eq!(score, round(score));
        assert!(r.priors.contains_key("f"));
    }
}
