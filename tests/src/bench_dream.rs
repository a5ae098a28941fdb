//! `bench dream` (issue 20): the dream stage's credit and ranking work over
//! a long history. Credit is recomputed from every attempt ever evaluated
//! (DESIGN D1), so a pass grows with the history; this measures by how much.
//!
//! A scratch schema (the real migrations) is filled in Postgres with
//! `generate_series` — runs of [`Shape::rules`] rules in
//! [`Shape::families`] families, [`Shape::attempts_per_rule`] evaluated
//! attempts per rule and run, each prompt showing
//! [`Shape::shown_per_prompt`] of its family's lessons — and a bare
//! knowledge repo gets every lesson on `main` in one commit. Then the
//! dream stage's own `publish` (the function `Dreamer::dream` calls: count
//! the trials, score, replace `lesson_credit`, build the ranking and
//! compare it with `main`'s) runs as a dry run in a transaction that is
//! rolled back, three times; S is the median. The history first holds the
//! small number of attempts, then grows to the large one, with the same
//! lessons and families: only the history changes.
//!
//! `rows_read` is Postgres's own count for one pass: the delta of
//! `seq_tup_read` over the schema's tables (`pg_stat_user_tables`) plus
//! `idx_tup_read` over their indexes (`pg_stat_user_indexes`: entries
//! returned by index scans, index-only ones included, which
//! `idx_tup_fetch` misses), the backend's counters flushed first.
//!
//! Goal: S at the large size ≤ [`GOAL_S`] on this 2-core machine, and
//! growth no faster than linear (ten times the history within ten times
//! [`LINEAR_TOLERANCE`] the time).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fleet_coordinator::dream::{self, credit};
use fleet_knowledge::{LessonFile, LessonKind, Provenance};
use sqlx::{Connection, PgPool};

use crate::db::TestDb;

/// The goal for one pass over a million attempts, in seconds.
pub const GOAL_S: f64 = 10.0;
/// Slack on linear growth: caches and fixed costs make small passes noisy.
pub const LINEAR_TOLERANCE: f64 = 1.5;
/// Passes per size; S is their median.
const ROUNDS: usize = 3;

/// The synthetic history's proportions.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub families: u64,
    pub rules_per_family: u64,
    pub lessons_per_family: u64,
    pub attempts_per_rule: u64,
    pub shown_per_prompt: u64,
}

impl Default for Shape {
    /// A large pack (1,000 rules) with 10,000 lessons on `main`; two
    /// attempts per rule and run, five lessons per prompt (`MAX_LESSONS`).
    fn default() -> Self {
        Shape {
            families: 100,
            rules_per_family: 10,
            lessons_per_family: 100,
            attempts_per_rule: 2,
            shown_per_prompt: 5,
        }
    }
}

impl Shape {
    pub fn rules(&self) -> u64 {
        self.families * self.rules_per_family
    }

    pub fn lessons(&self) -> u64 {
        self.families * self.lessons_per_family
    }

    fn attempts_per_run(&self) -> u64 {
        self.rules() * self.attempts_per_rule
    }
}

/// One size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DreamPoint {
    pub attempts: u64,
    pub lessons: u64,
    pub families: u64,
    pub seconds: f64,
    pub rows_read: i64,
}

impl DreamPoint {
    pub fn line(&self) -> String {
        format!(
            "bench dream: attempts={} lessons={} families={} seconds={:.2} rows_read={}",
            self.attempts, self.lessons, self.families, self.seconds, self.rows_read
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DreamFigures {
    /// The baseline, measured in the same run.
    pub small: DreamPoint,
    pub large: DreamPoint,
}

impl DreamFigures {
    /// S at the large size over S at the small one.
    pub fn growth(&self) -> f64 {
        self.large.seconds / self.small.seconds
    }

    /// Growth within [`LINEAR_TOLERANCE`] of the history's.
    pub fn linear(&self) -> bool {
        let history = self.large.attempts as f64 / self.small.attempts as f64;
        self.growth() <= history * LINEAR_TOLERANCE
    }

    pub fn goal_met(&self) -> bool {
        self.large.seconds <= GOAL_S && self.linear()
    }

    /// The `make bench` lines: the baseline, then the large size with the
    /// verdicts.
    pub fn lines(&self) -> [String; 2] {
        [
            self.small.line(),
            format!(
                "{} growth={:.1} linear={} goal_s={GOAL_S} goal_met={}",
                self.large.line(),
                self.growth(),
                self.linear(),
                self.goal_met()
            ),
        ]
    }
}

/// Builds the history up to `small` attempts, measures, grows it to
/// `large`, measures again. Progress on stderr.
pub async fn bench_dream(shape: Shape, small: u64, large: u64) -> anyhow::Result<DreamFigures> {
    anyhow::ensure!(small < large, "the baseline size must be the smaller");
    let db = TestDb::new().await;
    let repo = tempfile::tempdir()?;
    knowledge_repo(repo.path(), &shape)?;
    let mut runs = 0;
    let mut points = Vec::new();
    for attempts in [small, large] {
        let target_runs = attempts.div_ceil(shape.attempts_per_run());
        let started = Instant::now();
        fill(&db.pool, &shape, runs + 1, target_runs).await?;
        runs = target_runs;
        let history: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
            .fetch_one(&db.pool)
            .await?;
        eprintln!(
            "bench dream: history of {history} attempts ({runs} runs) filled in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        let mut seconds = Vec::new();
        let mut rows_read = 0;
        for round in 1..=ROUNDS {
            let (took, rows) = one_pass(&db.pool, repo.path(), runs as i64).await?;
            eprintln!(
                "bench dream: attempts={history} round {round}/{ROUNDS} seconds={:.2} rows_read={rows}",
                took.as_secs_f64()
            );
            seconds.push(took.as_secs_f64());
            rows_read = rows;
        }
        // For comparison only (stderr): what a pass did before issue 20,
        // one row per attempt into the coordinator and counted there.
        let started = Instant::now();
        let mut conn = db.pool.acquire().await?;
        let trials = dream::trials(&mut conn).await?;
        let old = credit::compute(&trials, &known(&shape));
        eprintln!(
            "bench dream: attempts={history} per-attempt trials and compute (before): seconds={:.2} rows={}",
            started.elapsed().as_secs_f64(),
            old.lessons.len()
        );
        drop((trials, old, conn));
        seconds.sort_by(f64::total_cmp);
        points.push(DreamPoint {
            attempts: history as u64,
            lessons: shape.lessons(),
            families: shape.families,
            seconds: seconds[ROUNDS / 2],
            rows_read,
        });
    }
    db.drop_schema().await?;
    Ok(DreamFigures {
        small: points[0],
        large: points[1],
    })
}

/// Every lesson of the shape on `main`, in one commit.
fn knowledge_repo(dir: &Path, shape: &Shape) -> anyhow::Result<()> {
    let packs = tempfile::tempdir()?;
    fleet_knowledge::init_bare(dir, packs.path())?;
    let mut files = Vec::new();
    for f in 0..shape.families {
        for l in 0..shape.lessons_per_family {
            let lesson = LessonFile {
                id: lesson_id(f, l),
                kind: LessonKind::Lesson,
                family: family(f),
                scope: "family".into(),
                pattern: None,
                provenance: Provenance {
                    run: "1".into(),
                    attempt: 1,
                    agent: "bench".into(),
                    source_commit: None,
                    merged: Vec::new(),
                },
                body: format!("lesson {l} of family {f}: what made its rules pass\n"),
            };
            files.push((lesson.path()?, lesson.render().into_bytes()));
        }
    }
    let changes: Vec<_> = files
        .iter()
        .map(|(p, b)| (p.as_str(), Some(b.as_slice())))
        .collect();
    fleet_knowledge::commit_changes(dir, &changes, "bench dream: lessons")?;
    Ok(())
}

/// Family → lesson ids on `main`, as the dream stage reads them.
fn known(shape: &Shape) -> BTreeMap<String, BTreeSet<String>> {
    (0..shape.families)
        .map(|f| {
            let ids = (0..shape.lessons_per_family).map(|l| lesson_id(f, l));
            (family(f), ids.collect())
        })
        .collect()
}

fn family(f: u64) -> String {
    format!("family_{f}")
}

fn lesson_id(f: u64, l: u64) -> String {
    format!("lesson-f{f}-{l}")
}

/// Runs `lo..=hi`, completed: every rule once per run, its attempts
/// evaluated (about a third won), each prompt showing lessons of its family
/// that rotate from run to run. Set-based, in one transaction.
async fn fill(pool: &PgPool, shape: &Shape, lo: u64, hi: u64) -> anyhow::Result<()> {
    let (lo, hi) = (lo as i64, hi as i64);
    let Shape {
        families,
        lessons_per_family,
        attempts_per_rule,
        shown_per_prompt,
        ..
    } = *shape;
    let rules = shape.rules();
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO runs (id, skill_pack, profile, budgets, priority, status, total, finished_at)
         SELECT g, 'bench', 'bench', '{{}}', 0, 'completed', {rules}, now()
         FROM generate_series($1::int8, $2::int8) g"
    ))
    .bind(lo)
    .bind(hi)
    .execute(&mut *tx)
    .await?;
    // Rule g of a run: family g % F, the (g / F)-th rule of it.
    sqlx::query(&format!(
        "INSERT INTO work_items (run_id, rule_id, family, ordinal, state, outcome, attempts)
         SELECT r, format('rule_f%s_%s', g % {families}, g / {families}),
                format('family_%s', g % {families}), g, 'done', 'escalated', {attempts_per_rule}
         FROM generate_series($1::int8, $2::int8) r, generate_series(0, {rules} - 1) g"
    ))
    .bind(lo)
    .bind(hi)
    .execute(&mut *tx)
    .await?;
    // A multiplicative hash of the ids decides wins: deterministic, ~35 %.
    sqlx::query(&format!(
        "INSERT INTO attempts (work_item_id, epoch, attempt, agent_id, eval_status, health_ok,
                               started_at, evaluated_at, script_source)
         SELECT w.id, 1, n, 'bench',
                CASE WHEN (w.id * 7919 + n * 104729) % 100 < 35 THEN 'pass' ELSE 'fail' END,
                true, now(), now(), 'brain'
         FROM work_items w, generate_series(1, {attempts_per_rule}) n
         WHERE w.run_id BETWEEN $1 AND $2"
    ))
    .bind(lo)
    .bind(hi)
    .execute(&mut *tx)
    .await?;
    // Lesson (rule + 3·run + 7·k) mod L of the family, k = 1..shown: distinct
    // within a prompt while shown ≤ L / 7.
    sqlx::query(&format!(
        "INSERT INTO lesson_attributions (attempt_id, lesson_id, rank, score)
         SELECT a.id,
                format('lesson-f%s-%s', w.ordinal % {families},
                       (w.ordinal / {families} + w.run_id * 3 + k * 7) % {lessons_per_family}),
                k, 0.5
         FROM attempts a JOIN work_items w ON w.id = a.work_item_id,
              generate_series(1, {shown_per_prompt}) k
         WHERE w.run_id BETWEEN $1 AND $2"
    ))
    .bind(lo)
    .bind(hi)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT setval(pg_get_serial_sequence('runs', 'id'), $1)")
        .bind(hi)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // As autovacuum would have by the time a dream pass reads them: hint
    // bits set, visibility map and planner statistics current.
    sqlx::raw_sql("VACUUM ANALYZE runs, work_items, attempts, lesson_attributions")
        .execute(pool)
        .await?;
    Ok(())
}

/// One dry-run pass of the dream stage's credit and ranking: its time, and
/// the rows Postgres read for it.
async fn one_pass(pool: &PgPool, repo: &Path, run: i64) -> anyhow::Result<(Duration, i64)> {
    let mut conn = pool.acquire().await?;
    let before = rows_read(&mut conn).await?;
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    dream::publish(&mut tx, repo, run, true).await?;
    tx.rollback().await?;
    let took = started.elapsed();
    // Counters reach the shared statistics when the backend flushes them.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await?;
    let after = rows_read(&mut conn).await?;
    Ok((took, after - before))
}

/// Rows read by sequential scans of the schema's tables and entries read
/// by scans of their indexes.
async fn rows_read(conn: &mut sqlx::PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT COALESCE(sum(seq_tup_read), 0) FROM pg_stat_user_tables
                 WHERE schemaname = current_schema())::int8
              + (SELECT COALESCE(sum(idx_tup_read), 0) FROM pg_stat_user_indexes
                 WHERE schemaname = current_schema())::int8",
    )
    .fetch_one(&mut *conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(small_s: f64, large_s: f64) -> DreamFigures {
        let point = |attempts, seconds| DreamPoint {
            attempts,
            lessons: 10_000,
            families: 100,
            seconds,
            rows_read: 0,
        };
        DreamFigures {
            small: point(100_000, small_s),
            large: point(1_000_000, large_s),
        }
    }

    #[test]
    fn the_goal_needs_the_time_and_linear_growth() {
        assert!(figures(0.8, 7.5).goal_met());
        // Within the tolerance of linear.
        assert!(figures(0.5, 7.4).linear());
        // Faster than linear, or over the time.
        assert!(!figures(0.2, 7.5).goal_met());
        assert!(!figures(1.2, 10.5).goal_met());
        let [small, large] = figures(0.8, 7.5).lines();
        assert!(small.starts_with("bench dream: attempts=100000 lessons=10000 families=100"));
        assert!(
            large.ends_with("linear=true goal_s=10 goal_met=true"),
            "{large}"
        );
    }
}
