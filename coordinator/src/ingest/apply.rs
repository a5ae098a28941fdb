//! Applies one batch of stream entries inside one Postgres transaction
//! (DESIGN E2, E3) with a fixed number of statements: the batch's work items
//! checked and locked in one look-up, the event ids already stored in
//! another, every new event row in one `COPY`, then the effects of the rows
//! that were new, each kind in one statement
//! (`attempts.rs`, `outcomes.rs`); only bad entries and finished runs cost a
//! statement each. Nothing here touches Redis or metrics: the caller records
//! the returned effects only after the commit, so a rolled-back batch that is
//! redelivered is never counted twice.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use fleet_common::event::{Delivered, EventBody, FIELD_EVENT};
use sqlx::PgConnection;

use super::attempts::AttemptBatch;
use super::decode::{sanitize, Decoded};
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

/// Applies `entries`, each sorted by [`super::decode::decode`] into
/// `decoded` (same order).
pub(crate) async fn apply_batch(
    tx: &mut PgConnection,
    entries: &[StreamEntry],
    decoded: Vec<Decoded>,
) -> Result<Effects, sqlx::Error> {
    let mut decoded: Vec<(&StreamEntry, Decoded)> = entries.iter().zip(decoded).collect();
    let mut tasks: Vec<i64> = decoded
        .iter()
        .filter_map(|(_, d)| match d {
            Decoded::Event(d) => Some(d.event.task.0),
            _ => None,
        })
        .collect();
    tasks.sort_unstable();
    tasks.dedup();
    // `run_events` has no foreign keys (migration 0007): this is the check,
    // with the locks a foreign-key check takes, once per batch.
    let owners: HashMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(
        "SELECT id, run_id FROM work_items WHERE id = ANY($1) ORDER BY id FOR KEY SHARE",
    )
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

/// `run_events` columns written by [`insert_events`], in `COPY` order.
const EVENT_COLUMNS: &str = "event_id, stream_id, run_id, work_item_id, kind, rejected, agent_id, \
     incarnation, seq, epoch, attempt, ts, body";

/// Inserts the events of the batch not yet in `run_events` (ids unique
/// within `events`) with one `COPY`; answers the ids that were new (a
/// redelivered event id is already there and has no effect).
///
/// `COPY` has no `ON CONFLICT`: the ids already stored are looked up first.
/// An event id another coordinator inserts between the look-up and the
/// `COPY` fails the batch with a unique violation on the key (it waits for
/// that transaction first); the caller then retries the batch, whose
/// look-up now finds it. The key alone decides what is new (DESIGN E2).
async fn insert_events(
    tx: &mut PgConnection,
    events: &[(&str, &Delivered)],
) -> Result<HashSet<String>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<&str> = events.iter().map(|(_, d)| d.event.id.0.as_str()).collect();
    let stored: HashSet<String> =
        sqlx::query_scalar("SELECT event_id FROM run_events WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let mut rows = Vec::with_capacity(events.len() * 512);
    let mut new = HashSet::with_capacity(events.len());
    for (stream_id, d) in events {
        let e = &d.event;
        if stored.contains(e.id.0.as_str()) {
            continue;
        }
        new.insert(e.id.0.clone());
        copy_row(&mut rows, stream_id, d)?;
    }
    if new.is_empty() {
        return Ok(new);
    }
    let mut copy = tx
        .copy_in_raw(&format!("COPY run_events ({EVENT_COLUMNS}) FROM STDIN"))
        .await?;
    if let Err(e) = copy.send(rows).await {
        let _ = copy.abort("ingester could not send the batch").await;
        return Err(e);
    }
    copy.finish().await?;
    Ok(new)
}

/// One `run_events` row in `COPY` text format.
fn copy_row(out: &mut Vec<u8>, stream_id: &str, d: &Delivered) -> Result<(), sqlx::Error> {
    use std::io::Write;
    let e = &d.event;
    let ts = timestamp(e.ts_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let text = |out: &mut Vec<u8>, s: &str| {
        copy_text(out, s);
        out.push(b'\t');
    };
    text(out, &e.id.0);
    text(out, stream_id);
    let _ = write!(out, "{}\t{}\t", e.run.0, e.task.0);
    text(out, e.body.kind());
    match d.rejected {
        Some(r) => text(out, r.as_str()),
        None => out.extend_from_slice(b"\\N\t"),
    }
    text(out, e.agent.as_str());
    let _ = write!(
        out,
        "{}\t{}\t{}\t{}\t{ts}\t",
        e.incarnation, e.seq, e.epoch.0, e.attempt
    );
    serde_json::to_writer(CopyText(out), &e.body).map_err(|err| sqlx::Error::Encode(err.into()))?;
    out.push(b'\n');
    Ok(())
}

/// Writes what it is given escaped for `COPY` text format.
struct CopyText<'a>(&'a mut Vec<u8>);

impl std::io::Write for CopyText<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        copy_bytes(self.0, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `s` escaped for `COPY … FROM STDIN` text format.
fn copy_text(out: &mut Vec<u8>, s: &str) {
    copy_bytes(out, s.as_bytes());
}

fn copy_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
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
    // parallel must not both see the other's item as still pending. Not
    // `FOR UPDATE`: each batch already holds the run's key-share lock (the
    // foreign keys of the lessons it inserted), and two batches upgrading
    // that to `FOR UPDATE` deadlock; `FOR NO KEY UPDATE` excludes only its
    // own kind.
    sqlx::query("SELECT 1 FROM runs WHERE id = $1 FOR NO KEY UPDATE")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_read_as_syntax() {
        let mut out = Vec::new();
        copy_text(&mut out, "a\tb\\c\nd\re \u{e9} \\N");
        assert_eq!(out, "a\\tb\\\\c\\nd\\re \u{e9} \\\\N".as_bytes());
    }
}
