//! Applies one batch of stream entries inside one Postgres transaction
//! (DESIGN E2, E3). Nothing here touches Redis or metrics: the caller records
//! the returned effects only after the commit, so a rolled-back batch that is
//! redelivered is never counted twice.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use fleet_common::event::{Delivered, EventBody, FIELD_EVENT};
use fleet_common::Outcome;
use sqlx::types::Json;
use sqlx::PgConnection;

use super::decode::{decode, sanitize, Decoded};
use super::stream::StreamEntry;

/// Quarantine reason for an event about a task its run does not have.
const UNKNOWN_TASK: &str = "unknown_task";

/// What a committed batch did, for counters and logs.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Kind and timestamp of each newly applied event.
    pub applied: Vec<(&'static str, i64)>,
    pub duplicates: u64,
    /// Reason label of each newly quarantined entry.
    pub quarantined: Vec<&'static str>,
    pub rejected_completions: u64,
    /// Outcome and escalation reason ("" otherwise) of each accepted outcome.
    pub outcomes: Vec<(&'static str, &'static str)>,
    pub duplicate_outcomes: u64,
    pub completed_runs: Vec<i64>,
}

impl Effects {
    pub fn merge(&mut self, o: Effects) {
        self.applied.extend(o.applied);
        self.duplicates += o.duplicates;
        self.quarantined.extend(o.quarantined);
        self.rejected_completions += o.rejected_completions;
        self.outcomes.extend(o.outcomes);
        self.duplicate_outcomes += o.duplicate_outcomes;
        self.completed_runs.extend(o.completed_runs);
    }
}

pub(crate) async fn apply_batch(
    tx: &mut PgConnection,
    entries: &[StreamEntry],
) -> Result<Effects, sqlx::Error> {
    let mut decoded: Vec<(&StreamEntry, Decoded)> =
        entries.iter().map(|e| (e, decode(e))).collect();
    let tasks: Vec<i64> = decoded
        .iter()
        .filter_map(|(_, d)| match d {
            Decoded::Event(d) => Some(d.event.task.0),
            _ => None,
        })
        .collect();
    let owners: HashMap<i64, i64> =
        sqlx::query_as::<_, (i64, i64)>("SELECT id, run_id FROM work_items WHERE id = ANY($1)")
            .bind(&tasks)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();

    let mut fx = Effects::default();
    let mut touched_runs = BTreeSet::new();
    for (entry, d) in decoded.iter_mut() {
        if let Decoded::Event(delivered) = d {
            let e = &delivered.event;
            if owners.get(&e.task.0) != Some(&e.run.0) {
                *d = Decoded::Bad {
                    reason: UNKNOWN_TASK,
                    detail: format!("task {} is not a work item of run {}", e.task, e.run),
                    raw: entry.field(FIELD_EVENT).unwrap_or_default().to_vec(),
                };
            }
        }
        match d {
            Decoded::Event(delivered) => {
                apply_event(tx, &entry.id, delivered, &mut fx, &mut touched_runs).await?
            }
            Decoded::Bad {
                reason,
                detail,
                raw,
            } => {
                if quarantine(tx, &entry.id, reason, detail, raw).await? {
                    fx.quarantined.push(reason);
                }
            }
            Decoded::Gone => {
                tracing::warn!(stream_id = %entry.id, "pending entry was deleted from the stream; skipped");
            }
        }
    }
    // Ascending run order, so two coordinators finishing runs in one batch
    // each lock them in the same order and cannot deadlock.
    for run in touched_runs {
        if complete_run_if_done(tx, run).await? {
            fx.completed_runs.push(run);
        }
    }
    Ok(fx)
}

/// Keeps a bad entry verbatim; false if it was quarantined before.
pub(crate) async fn quarantine(
    conn: &mut PgConnection,
    stream_id: &str,
    reason: &'static str,
    detail: &str,
    raw: &[u8],
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO quarantined_events (stream_id, reason, detail, raw)
         VALUES ($1, $2, $3, $4) ON CONFLICT (stream_id) DO NOTHING",
    )
    .bind(stream_id)
    .bind(reason)
    .bind(sanitize(detail))
    .bind(raw)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        tracing::warn!(stream_id, reason, detail = %sanitize(detail), "event quarantined");
    }
    Ok(inserted == 1)
}

fn timestamp(ts_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ts_ms).unwrap_or_default()
}

async fn apply_event(
    tx: &mut PgConnection,
    stream_id: &str,
    d: &Delivered,
    fx: &mut Effects,
    touched_runs: &mut BTreeSet<i64>,
) -> Result<(), sqlx::Error> {
    let e = &d.event;
    let ts = timestamp(e.ts_ms);
    let item = e.task.0;
    let new: Option<String> = sqlx::query_scalar(
        "INSERT INTO run_events (event_id, stream_id, run_id, work_item_id, kind, rejected, agent_id,
                                 incarnation, seq, epoch, attempt, ts, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&e.id.0)
    .bind(stream_id)
    .bind(e.run.0)
    .bind(item)
    .bind(e.body.kind())
    .bind(d.rejected.map(|r| r.as_str()))
    .bind(e.agent.as_str())
    .bind(e.incarnation as i32)
    .bind(e.seq as i64)
    .bind(e.epoch.0 as i64)
    .bind(e.attempt as i32)
    .bind(ts)
    .bind(Json(&e.body))
    .fetch_optional(&mut *tx)
    .await?;
    if new.is_none() {
        // Redelivery: the first copy already had every effect.
        fx.duplicates += 1;
        return Ok(());
    }
    if let Some(reason) = d.rejected {
        tracing::info!(run = e.run.0, task = item, rule = %e.rule, agent = %e.agent, epoch = e.epoch.0,
            reason = reason.as_str(), "stale completion recorded, not counted");
        fx.rejected_completions += 1;
        return Ok(());
    }
    let attempt_key = (
        item,
        e.epoch.0 as i64,
        e.attempt as i32,
        e.agent.as_str(),
        ts,
    );
    match &e.body {
        EventBody::AttemptStarted => {
            upsert_attempt(
                tx,
                attempt_key,
                "started_at = LEAST(attempts.started_at, EXCLUDED.started_at)",
            )
            .await?;
        }
        EventBody::PromptAssembled { lessons, .. } => {
            let attempt_id = upsert_attempt(tx, attempt_key, "epoch = EXCLUDED.epoch").await?;
            let ids: Vec<&str> = lessons.iter().map(|l| l.id.as_str()).collect();
            let ranks: Vec<i32> = lessons.iter().map(|l| l.rank as i32).collect();
            let scores: Vec<f64> = lessons.iter().map(|l| l.score).collect();
            sqlx::query(
                "INSERT INTO lesson_attributions (attempt_id, lesson_id, rank, score)
                 SELECT $1, u.id, u.rank, u.score FROM UNNEST($2::text[], $3::int[], $4::float8[]) AS u(id, rank, score)
                 ON CONFLICT DO NOTHING",
            )
            .bind(attempt_id)
            .bind(&ids)
            .bind(&ranks)
            .bind(&scores)
            .execute(&mut *tx)
            .await?;
        }
        EventBody::ScriptProposed { script } => {
            let id = upsert_attempt(tx, attempt_key, "epoch = EXCLUDED.epoch").await?;
            sqlx::query("UPDATE attempts SET script = $2 WHERE id = $1")
                .bind(id)
                .bind(script)
                .execute(&mut *tx)
                .await?;
        }
        EventBody::AttemptEvaluated {
            status,
            health_ok,
            health_failed,
            ..
        } => {
            let id = upsert_attempt(tx, attempt_key, "epoch = EXCLUDED.epoch").await?;
            let status = serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            sqlx::query("UPDATE attempts SET eval_status = $2, health_ok = $3, evaluated_at = $4, health_failed = $5 WHERE id = $1")
                .bind(id)
                .bind(status)
                .bind(health_ok)
                .bind(ts)
                .bind(health_failed)
                .execute(&mut *tx)
                .await?;
        }
        EventBody::LessonProposed { lesson } => {
            let id = upsert_attempt(tx, attempt_key, "epoch = EXCLUDED.epoch").await?;
            sqlx::query("UPDATE attempts SET reflection = 'lesson' WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let provenance = serde_json::json!({
                "run": e.run.0, "rule": e.rule, "epoch": e.epoch.0,
                "attempt": e.attempt, "agent": e.agent.as_str(),
            });
            // The id is deterministic per (lease, attempt, kind): a second
            // copy of the same lesson is the same row.
            sqlx::query(
                "INSERT INTO lessons (id, family, kind, scope, body, provenance, created_run_id,
                                      pattern, work_item_id, epoch, attempt, rule_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&lesson.id)
            .bind(&lesson.family)
            .bind(lesson.kind.as_str())
            .bind(lesson.scope.render(&e.rule))
            .bind(&lesson.text)
            .bind(Json(provenance))
            .bind(e.run.0)
            .bind(&lesson.pattern)
            .bind(item)
            .bind(e.epoch.0 as i64)
            .bind(e.attempt as i32)
            .bind(&e.rule)
            .execute(&mut *tx)
            .await?;
        }
        EventBody::ReflectionFailed { reason } => {
            let id = upsert_attempt(tx, attempt_key, "epoch = EXCLUDED.epoch").await?;
            sqlx::query("UPDATE attempts SET reflection = $2 WHERE id = $1")
                .bind(id)
                .bind(reason.as_str())
                .execute(&mut *tx)
                .await?;
        }
        EventBody::TaskCompleted {
            outcome,
            attempts,
            duration_ms,
        } => {
            let fixed_attempt = match outcome {
                Outcome::Fixed { attempt } => Some(*attempt as i32),
                _ => None,
            };
            let reason = outcome.reason().map(|r| r.as_str());
            let updated = sqlx::query(
                "UPDATE work_items SET state = 'done', outcome = $2, reason = $3, fixed_attempt = $4,
                        attempts = $5, duration_ms = $6, accepted_epoch = $7, accepted_agent = $8,
                        accepted_event = $9, finished_at = $10
                 WHERE id = $1 AND state = 'pending'",
            )
            .bind(item)
            .bind(outcome.kind())
            .bind(reason)
            .bind(fixed_attempt)
            .bind(*attempts as i32)
            .bind(*duration_ms as i64)
            .bind(e.epoch.0 as i64)
            .bind(e.agent.as_str())
            .bind(&e.id.0)
            .bind(ts)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                // Two accepted outcomes for one task: the lease protocol failed.
                tracing::error!(run = e.run.0, task = item, rule = %e.rule, agent = %e.agent,
                    epoch = e.epoch.0, event = %e.id, "duplicate accepted outcome; the first one stands");
                fx.duplicate_outcomes += 1;
            } else {
                fx.outcomes.push((outcome.kind(), reason.unwrap_or("")));
                touched_runs.insert(e.run.0);
            }
        }
        EventBody::LeaseAcquired { .. }
        | EventBody::LeaseAbandoned { .. }
        | EventBody::LeaseReleased
        | EventBody::LeaseReclaimed { .. } => {}
    }
    fx.applied.push((e.body.kind(), e.ts_ms));
    Ok(())
}

/// Events of one attempt may arrive in any order, so each creates the row if
/// it is missing. `on_conflict` is a fixed SET clause, never caller data.
async fn upsert_attempt(
    tx: &mut PgConnection,
    (item, epoch, attempt, agent, ts): (i64, i64, i32, &str, DateTime<Utc>),
    on_conflict: &'static str,
) -> Result<i64, sqlx::Error> {
    let sql = format!(
        "INSERT INTO attempts (work_item_id, epoch, attempt, agent_id, started_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (work_item_id, epoch, attempt) DO UPDATE SET {on_conflict}
         RETURNING id"
    );
    sqlx::query_scalar(&sql)
        .bind(item)
        .bind(epoch)
        .bind(attempt)
        .bind(agent)
        .bind(ts)
        .fetch_one(&mut *tx)
        .await
}

async fn complete_run_if_done(tx: &mut PgConnection, run: i64) -> Result<bool, sqlx::Error> {
    // Lock first: two batches finishing the last two items of a run in
    // parallel must not both see the other's item as still pending.
    sqlx::query("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE")
        .bind(run)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query(
        "UPDATE runs SET status = 'completed', finished_at = now()
         WHERE id = $1 AND status = 'running'
           AND NOT EXISTS (SELECT 1 FROM work_items WHERE run_id = $1 AND state = 'pending')",
    )
    .bind(run)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(done == 1)
}
