//! Candidate lessons and accepted outcomes of one batch, each kind written
//! in one statement.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use fleet_common::event::{Delivered, EventBody};
use fleet_common::lesson::CandidateLesson;
use fleet_common::{Event, Outcome};
use sqlx::PgConnection;

use super::apply::Effects;

/// `LessonProposed` candidates. The id is deterministic per (lease, attempt,
/// kind): a second copy of the same lesson is the same row.
#[derive(Default)]
pub(crate) struct LessonBatch<'a> {
    lessons: Vec<(&'a Event, &'a CandidateLesson)>,
}

impl<'a> LessonBatch<'a> {
    pub fn add(&mut self, e: &'a Event, lesson: &'a CandidateLesson) {
        self.lessons.push((e, lesson));
    }

    pub async fn write(mut self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.lessons.is_empty() {
            return Ok(());
        }
        // Key order: see `AttemptBatch::write`.
        self.lessons.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        let mut ids = Vec::new();
        let mut families = Vec::new();
        let mut kinds = Vec::new();
        let mut scopes = Vec::new();
        let mut bodies = Vec::new();
        let mut provenance = Vec::new();
        let mut runs = Vec::new();
        let mut patterns = Vec::new();
        let mut items = Vec::new();
        let mut epochs = Vec::new();
        let mut attempts = Vec::new();
        let mut rules = Vec::new();
        for (e, l) in &self.lessons {
            ids.push(l.id.as_str());
            families.push(l.family.as_str());
            kinds.push(l.kind.as_str());
            scopes.push(l.scope.render(&e.rule));
            bodies.push(l.text.as_str());
            provenance.push(
                serde_json::json!({
                    "run": e.run.0, "rule": e.rule, "epoch": e.epoch.0,
                    "attempt": e.attempt, "agent": e.agent.as_str(),
                })
                .to_string(),
            );
            runs.push(e.run.0);
            patterns.push(l.pattern.as_deref());
            items.push(e.task.0);
            epochs.push(e.epoch.0 as i64);
            attempts.push(e.attempt as i32);
            rules.push(e.rule.as_str());
        }
        sqlx::query(
            "INSERT INTO lessons (id, family, kind, scope, body, provenance, created_run_id,
                                  pattern, work_item_id, epoch, attempt, rule_id)
             SELECT u.id, u.family, u.kind, u.scope, u.body, u.provenance::jsonb, u.run,
                    u.pattern, u.item, u.epoch, u.attempt, u.rule
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::int8[], $8::text[], $9::int8[], $10::int8[], $11::int4[], $12::text[])
                  AS u(id, family, kind, scope, body, provenance, run, pattern, item, epoch, attempt, rule)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&families)
        .bind(&kinds)
        .bind(&scopes)
        .bind(&bodies)
        .bind(&provenance)
        .bind(&runs)
        .bind(&patterns)
        .bind(&items)
        .bind(&epochs)
        .bind(&attempts)
        .bind(&rules)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Accepted `TaskCompleted` events: each marks its work item done if it is
/// still pending. The first outcome of a task stands; a second one means the
/// lease protocol failed, and is logged and counted.
#[derive(Default)]
pub(crate) struct CompletionBatch<'a> {
    completions: Vec<(&'a Delivered, DateTime<Utc>)>,
}

impl<'a> CompletionBatch<'a> {
    pub fn add(&mut self, d: &'a Delivered, ts: DateTime<Utc>) {
        self.completions.push((d, ts));
    }

    /// Answers the runs that got an outcome, in ascending order.
    pub async fn write(
        self,
        tx: &mut PgConnection,
        fx: &mut Effects,
    ) -> Result<BTreeSet<i64>, sqlx::Error> {
        let mut touched_runs = BTreeSet::new();
        if self.completions.is_empty() {
            return Ok(touched_runs);
        }
        // One row per task, in stream order: a later copy for the same task
        // in this batch can only be a duplicate outcome.
        let mut first = HashSet::new();
        let mut rows = Vec::new();
        let mut later = Vec::new();
        for (d, ts) in &self.completions {
            if first.insert(d.event.task.0) {
                rows.push((*d, *ts));
            } else {
                later.push(*d);
            }
        }
        // Key order: see `AttemptBatch::write`.
        rows.sort_by_key(|(d, _)| d.event.task.0);
        let mut items = Vec::new();
        let mut outcomes = Vec::new();
        let mut reasons = Vec::new();
        let mut fixed = Vec::new();
        let mut attempts = Vec::new();
        let mut durations = Vec::new();
        let mut epochs = Vec::new();
        let mut agents = Vec::new();
        let mut event_ids = Vec::new();
        let mut finished = Vec::new();
        for (d, ts) in &rows {
            let e = &d.event;
            let EventBody::TaskCompleted {
                outcome,
                attempts: n,
                duration_ms,
            } = &e.body
            else {
                continue;
            };
            items.push(e.task.0);
            outcomes.push(outcome.kind());
            reasons.push(outcome.reason_label());
            fixed.push(match outcome {
                Outcome::Fixed { attempt } => Some(*attempt as i32),
                _ => None,
            });
            attempts.push(*n as i32);
            durations.push(*duration_ms as i64);
            epochs.push(e.epoch.0 as i64);
            agents.push(e.agent.as_str());
            event_ids.push(e.id.0.as_str());
            finished.push(*ts);
        }
        let updated: HashSet<i64> = sqlx::query_scalar(
            "UPDATE work_items w SET state = 'done', outcome = u.outcome, reason = u.reason,
                    fixed_attempt = u.fixed, attempts = u.attempts, duration_ms = u.duration_ms,
                    accepted_epoch = u.epoch, accepted_agent = u.agent, accepted_event = u.event_id,
                    finished_at = u.finished
             FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::int8[],
                         $7::int8[], $8::text[], $9::text[], $10::timestamptz[])
                  AS u(id, outcome, reason, fixed, attempts, duration_ms, epoch, agent, event_id, finished)
             WHERE w.id = u.id AND w.state = 'pending'
             RETURNING w.id",
        )
        .bind(&items)
        .bind(&outcomes)
        .bind(&reasons)
        .bind(&fixed)
        .bind(&attempts)
        .bind(&durations)
        .bind(&epochs)
        .bind(&agents)
        .bind(&event_ids)
        .bind(&finished)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        for (d, _) in &rows {
            let e = &d.event;
            let EventBody::TaskCompleted { outcome, .. } = &e.body else {
                continue;
            };
            if updated.contains(&e.task.0) {
                fx.outcomes
                    .push((outcome.kind(), outcome.reason_label().unwrap_or("")));
                touched_runs.insert(e.run.0);
            } else {
                duplicate_outcome(d, fx);
            }
        }
        for d in later {
            duplicate_outcome(d, fx);
        }
        Ok(touched_runs)
    }
}

/// Two accepted outcomes for one task: the lease protocol failed.
fn duplicate_outcome(d: &Delivered, fx: &mut Effects) {
    let e = &d.event;
    tracing::error!(run = e.run.0, task = e.task.0, rule = %e.rule, agent = %e.agent,
        epoch = e.epoch.0, event = %e.id, "duplicate accepted outcome; the first one stands");
    fx.duplicate_outcomes += 1;
}
