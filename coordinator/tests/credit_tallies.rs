//! The dream stage counts trials in Postgres (`dream::tallies`); credit
//! must come out exactly as from the trials one row per attempt
//! (`dream::trials`, what `credit::compute` was always given): same counts
//! on random histories with every kind of attempt the filter must tell
//! apart (not evaluated, skill replays, unhealthy passes, duplicate-free
//! attributions, attempts without lessons).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use fleet_coordinator::db;
use fleet_coordinator::dream::{self, credit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

async fn fresh_db() -> PgPool {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let pool = db::connect(&common::database_url(), Some(&schema))
        .await
        .expect("postgres is reachable: run `make deps`");
    db::migrate(&pool).await.expect("migrations apply");
    pool
}

/// A random history of `runs` runs; returns the lessons it mentions per
/// family (as if on `main`), plus one family with lessons and no attempt.
async fn random_history(pool: &PgPool, seed: u64, runs: i64) -> BTreeMap<String, BTreeSet<String>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    known
        .entry("no_attempts_yet".into())
        .or_default()
        .insert("fresh".into());
    for run in 1..=runs {
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (skill_pack, profile, budgets, priority, status, total)
             VALUES ('p', 'x', '{}', 0, 'completed', 0) RETURNING id",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        for r in 0..rng.random_range(1..12) {
            let family = format!("fam{}", r % 3);
            let rule = format!("{family}_rule{r}");
            let item: i64 = sqlx::query_scalar(
                "INSERT INTO work_items (run_id, rule_id, family, ordinal) VALUES ($1, $2, $3, $4)
                 RETURNING id",
            )
            .bind(run_id)
            .bind(&rule)
            .bind(&family)
            .bind(r)
            .fetch_one(pool)
            .await
            .unwrap();
            for attempt in 1..=rng.random_range(1..4) {
                let status = ["pass", "fail", "error", "notapplicable", ""][rng.random_range(0..5)];
                let health: Option<bool> = [Some(true), Some(false), None][rng.random_range(0..3)];
                let skill = rng.random_bool(0.15);
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO attempts (work_item_id, epoch, attempt, agent_id, eval_status,
                                           health_ok, started_at, script_source, skill_blob, skill_commit)
                     VALUES ($1, $2, $3, 'a', NULLIF($4, ''), $5, now(), $6, $7, $7) RETURNING id",
                )
                .bind(item)
                .bind(run)
                .bind(attempt)
                .bind(status)
                .bind(health)
                .bind(if skill { "skill" } else { "brain" })
                .bind(skill.then_some("0123456789abcdef0123456789abcdef01234567"))
                .fetch_one(pool)
                .await
                .unwrap();
                let lessons: BTreeSet<String> = (0..rng.random_range(0..5))
                    .map(|_| format!("l{}", rng.random_range(0..6)))
                    .collect();
                for (rank, lesson) in lessons.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO lesson_attributions (attempt_id, lesson_id, rank, score)
                         VALUES ($1, $2, $3, 0.5)",
                    )
                    .bind(id)
                    .bind(lesson)
                    .bind(rank as i32 + 1)
                    .execute(pool)
                    .await
                    .unwrap();
                    known
                        .entry(family.clone())
                        .or_default()
                        .insert(lesson.clone());
                }
            }
        }
    }
    known
}

#[tokio::test]
async fn counting_in_postgres_gives_the_credit_of_the_trials_row_by_row() {
    let pool = fresh_db().await;
    let mut conn = pool.acquire().await.unwrap();
    for seed in 0..6 {
        let known = random_history(&pool, seed, 4).await;
        let trials = dream::trials(&mut conn).await.unwrap();
        let tallies = dream::tallies(&mut conn).await.unwrap();
        assert!(!trials.is_empty());
        assert_eq!(tallies, credit::Tallies::of(&trials), "seed {seed}");
        assert_eq!(
            credit::compute_from(&tallies, &known),
            credit::compute(&trials, &known),
            "seed {seed}"
        );
    }
}
