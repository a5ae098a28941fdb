//! Credit from all data (D1) and the ranking agents read (K4): every
//! evaluated attempt is a trial, counted in Postgres per family and per
//! (family, rule, lesson) ([`tallies`]), `credit::compute_from` scores the
//! lessons on `main`, `lesson_credit` is replaced in full, and
//! `ranking.json` is committed to `main` when it changed.
//!
//! Counting where the rows are keeps a pass to one scan of the history,
//! and what crosses to the coordinator to one row per (rule, lesson) pair
//! instead of one per attempt: the history grows with every run, the pairs
//! hardly do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use fleet_knowledge::layout::RANKING_PATH;
use fleet_knowledge::{LessonKind, RankedLesson, Ranking};
use sqlx::PgConnection;

use super::credit::{self, Credit, Tallies, Tally, Trial};
use super::git;
use crate::CoordinatorError;

/// Planner settings for the counting, restored after it. The history is
/// read in primary-key order: merge joins stream `lesson_attributions`
/// against `attempts`, where hash joins probe a million-row table at random
/// for every attribution (about twice as slow at a million attempts, `bench
/// dream`). The memory keeps the (family, rule, lesson) aggregate from
/// spilling to disk, as it does at the default 4 MB.
const COUNTING: [(&str, &str); 2] = [("enable_hashjoin", "off"), ("work_mem", "256MB")];

/// Every evaluated attempt with the lessons its prompt showed. A replay of
/// a skill from `main` (DESIGN H1) had no prompt: it is evidence neither
/// for nor against any lesson, and is no trial on either side. One row per
/// attempt: for tests and tools; the dream stage counts with [`tallies`].
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

/// The same trials as [`trials`], counted in Postgres: what
/// `Tallies::of(&trials(db))` gives, without moving one row per attempt.
/// An attribution's primary key (attempt, lesson) counts a lesson once per
/// prompt, as `Tallies::of` does.
pub async fn tallies(db: &mut PgConnection) -> Result<Tallies, sqlx::Error> {
    // Local to the transaction (the dream pass's); put back for the rest of it.
    let mut before = Vec::new();
    for (name, value) in COUNTING {
        let was: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&mut *db)
            .await?;
        sqlx::query("SELECT set_config($1, $2, true)")
            .bind(name)
            .bind(value)
            .execute(&mut *db)
            .await?;
        before.push((name, was));
    }
    // A failed count aborts the transaction, settings and all.
    let counted = count(db).await?;
    for (name, was) in before {
        sqlx::query("SELECT set_config($1, $2, true)")
            .bind(name)
            .bind(was)
            .execute(&mut *db)
            .await?;
    }
    Ok(counted)
}

async fn count(db: &mut PgConnection) -> Result<Tallies, sqlx::Error> {
    let families: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT w.family, count(*), count(*) FILTER (WHERE a.eval_status = 'pass' AND a.health_ok)
         FROM attempts a JOIN work_items w ON w.id = a.work_item_id
         WHERE a.eval_status IS NOT NULL AND a.script_source IS DISTINCT FROM 'skill'
         GROUP BY w.family",
    )
    .fetch_all(&mut *db)
    .await?;
    let shown: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT w.family, w.rule_id, la.lesson_id,
                count(*), count(*) FILTER (WHERE a.eval_status = 'pass' AND a.health_ok)
         FROM lesson_attributions la
         JOIN attempts a ON a.id = la.attempt_id
         JOIN work_items w ON w.id = a.work_item_id
         WHERE a.eval_status IS NOT NULL AND a.script_source IS DISTINCT FROM 'skill'
         GROUP BY w.family, w.rule_id, la.lesson_id",
    )
    .fetch_all(&mut *db)
    .await?;
    let tally = |trials: i64, wins: i64| Tally {
        trials: trials as u64,
        wins: wins as u64,
    };
    Ok(Tallies {
        families: families
            .into_iter()
            .map(|(f, n, w)| (f, tally(n, w)))
            .collect(),
        shown: shown
            .into_iter()
            .map(|(f, r, l, n, w)| ((f, r, l), tally(n, w)))
            .collect(),
    })
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
        pack_prior: credit.pack_prior.map(round),
        ..Ranking::default()
    }
}

/// Six decimals: enough to rank, and the file does not churn on noise.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Recomputes credit, stores it, and publishes the ranking (unless
/// `dry_run`). Returns whether `ranking.json` changed. Public for `bench
/// dream`, which times it over a long history.
pub async fn publish(
    db: &mut PgConnection,
    dir: &Path,
    run: i64,
    dry_run: bool,
) -> Result<bool, CoordinatorError> {
    let tallies = tallies(db).await?;
    let main = git::open_main(dir).await?;
    let (lessons, bad) = main.lessons().map_err(git::error)?;
    for (path, e) in &bad {
        tracing::warn!(path, error = %e, "unparseable lesson on main; not ranked");
    }
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in lessons.into_iter().filter(|l| l.kind != LessonKind::Skill) {
        known.entry(l.family).or_default().insert(l.id);
    }
    let credit = credit::compute_from(&tallies, &known);
    tracing::debug!(
        run,
        families = tallies.families.len(),
        pairs = tallies.shown.len(),
        rows = credit.lessons.len(),
        "credit recomputed"
    );

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
        assert_eq!(r.pack_prior, credit.pack_prior.map(round));
    }
}
