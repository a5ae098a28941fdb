//! Applies one batch of stream entries inside one Postgres transaction
//! (DESIGN E2, E3) with a fixed number of statements: every event row in one
//! `INSERT … SELECT FROM UNNEST(…) ON CONFLICT (event_id) DO NOTHING`, then
//! the effects of the rows that were new, each kind in one statement
//! (`attempts.rs`, `outcomes.rs`); only bad entries and finished runs cost a
//! statement each. Nothing here touches Redis or metrics: the caller records
//! the returned effects only after the commit, so a rolled-back batch that is
//! redelivered is never counted twice.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use fleet_common::event::{Delivered, EventBody, FIELD_EVENT};
use sqlx::PgConnection;

use super::attempts::AttemptBatch;
use super::decode::{decode, sanitize, Decoded};
use super::outcomes::{CompletionBatch, LessonBatch};
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
            Decoded::Event(_) => {}
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

    // The first copy of each event id in the batch; later copies are
    // redeliveries like any other.
    let mut seen = HashSet::new();
    let mut events: Vec<(&str, &Delivered)> = Vec::with_capacity(decoded.len());
    for (entry, d) in &decoded {
        if let Decoded::Event(delivered) = d {
            if seen.insert(delivered.event.id.0.as_str()) {
                events.push((entry.id.as_str(), delivered));
            } else {
                fx.duplicates += 1;
            }
        }
    }
    let new = insert_events(tx, &events).await?;

    let mut attempts = AttemptBatch::default();
    let mut lessons = LessonBatch::default();
    let mut completions = CompletionBatch::default();
    for (_, d) in &events {
        let e = &d.event;
        if !new.contains(e.id.0.as_str()) {
            // Redelivery: the first copy already had every effect.
            fx.duplicates += 1;
            continue;
        }
        if let Some(reason) = d.rejected {
            tracing::info!(run = e.run.0, task = e.task.0, rule = %e.rule, agent = %e.agent, epoch = e.epoch.0,
                reason = reason.as_str(), "stale completion recorded, not counted");
            fx.rejected_completions += 1;
            continue;
        }
        let ts = timestamp(e.ts_ms);
        attempts.add(d, ts);
        match &e.body {
            EventBody::LessonProposed { lesson } => lessons.add(e, lesson),
            EventBody::TaskCompleted { .. } => completions.add(d, ts),
            _ => {}
        }
        fx.applied.push((e.body.kind(), e.ts_ms));
    }
    attempts.write(tx).await?;
    lessons.write(tx).await?;
    let touched_runs = completions.write(tx, &mut fx).await?;
    // Ascending run order, so two coordinators finishing runs in one batch
    // each lock them in the same order and cannot deadlock.
    for run in touched_runs {
        if complete_run_if_done(tx, run).await? {
            fx.completed_runs.push(run);
        }
    }
    Ok(fx)
}

/// Inserts every event of the batch in one statement; answers the ids that
/// were new (a redelivered event id is already there and has no effect).
async fn insert_events(
    tx: &mut PgConnection,
    events: &[(&str, &Delivered)],
) -> Result<HashSet<String>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let n = events.len();
    let mut cols = EventColumns::with_capacity(n);
    for (stream_id, d) in events {
        let e = &d.event;
        cols.event_id.push(e.id.0.as_str());
        cols.stream_id.push(*stream_id);
        cols.run.push(e.run.0);
        cols.item.push(e.task.0);
        cols.kind.push(e.body.kind());
        cols.rejected.push(d.rejected.map(|r| r.as_str()));
        cols.agent.push(e.agent.as_str());
        cols.incarnation.push(e.incarnation as i32);
        cols.seq.push(e.seq as i64);
        cols.epoch.push(e.epoch.0 as i64);
        cols.attempt.push(e.attempt as i32);
        cols.ts.push(timestamp(e.ts_ms));
        cols.body
            .push(serde_json::to_string(&e.body).map_err(|err| sqlx::Error::Encode(err.into()))?);
    }
    let new: Vec<String> = sqlx::query_scalar(
        "INSERT INTO run_events (event_id, stream_id, run_id, work_item_id, kind, rejected, agent_id,
                                 incarnation, seq, epoch, attempt, ts, body)
         SELECT u.event_id, u.stream_id, u.run, u.item, u.kind, u.rejected, u.agent, u.inc, u.seq,
                u.epoch, u.attempt, u.ts, u.body::jsonb
         FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[],
                     $8::int4[], $9::int8[], $10::int8[], $11::int4[], $12::timestamptz[], $13::text[])
              AS u(event_id, stream_id, run, item, kind, rejected, agent, inc, seq, epoch, attempt, ts, body)
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&cols.event_id)
    .bind(&cols.stream_id)
    .bind(&cols.run)
    .bind(&cols.item)
    .bind(&cols.kind)
    .bind(&cols.rejected)
    .bind(&cols.agent)
    .bind(&cols.incarnation)
    .bind(&cols.seq)
    .bind(&cols.epoch)
    .bind(&cols.attempt)
    .bind(&cols.ts)
    .bind(&cols.body)
    .fetch_all(&mut *tx)
    .await?;
    Ok(new.into_iter().collect())
}

/// `run_events` columns of a batch, one array each (for `UNNEST`).
struct EventColumns<'a> {
    event_id: Vec<&'a str>,
    stream_id: Vec<&'a str>,
    run: Vec<i64>,
    item: Vec<i64>,
    kind: Vec<&'static str>,
    rejected: Vec<Option<&'static str>>,
    agent: Vec<&'a str>,
    incarnation: Vec<i32>,
    seq: Vec<i64>,
    epoch: Vec<i64>,
    attempt: Vec<i32>,
    ts: Vec<DateTime<Utc>>,
    body: Vec<String>,
}

impl EventColumns<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            event_id: Vec::with_capacity(n),
            stream_id: Vec::with_capacity(n),
            run: Vec::with_capacity(n),
            item: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            rejected: Vec::with_capacity(n),
            agent: Vec::with_capacity(n),
            incarnation: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            epoch: Vec::with_capacity(n),
            attempt: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
        }
    }
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
