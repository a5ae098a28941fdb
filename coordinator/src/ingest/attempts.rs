//! The attempt rows of one batch, folded in stream order and written with a
//! fixed number of statements whatever the batch size: one upsert of every
//! touched attempt (with its script's source, skill or brain: DESIGN H1), one `started_at` correction for rows that existed
//! already, one insert of every prompt's lesson attributions.
//!
//! Events of one attempt may arrive in any order and across batches, so the
//! upsert merges: a column this batch says nothing about keeps its value.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use fleet_common::event::{Delivered, EventBody, LessonRef, ScriptSource};
use sqlx::PgConnection;

/// (work item, epoch, attempt): the `attempts` row's unique key.
type Key = (i64, i64, i32);

/// Everything one batch says about one attempt; later events win.
struct Fold<'a> {
    key: Key,
    agent: &'a str,
    /// Timestamp of the batch's first event of this attempt (the row's
    /// `started_at` if the batch creates it).
    first_ts: DateTime<Utc>,
    /// Earliest `attempt_started` of the batch.
    started: Option<DateTime<Utc>>,
    script: Option<&'a str>,
    /// Where `script` came from (DESIGN H1); set with it.
    source: Option<&'a ScriptSource>,
    eval: Option<Eval<'a>>,
    reflection: Option<&'static str>,
    lessons: Vec<&'a LessonRef>,
}

struct Eval<'a> {
    status: Option<String>,
    health_ok: bool,
    at: DateTime<Utc>,
    health_failed: &'a [String],
}

#[derive(Default)]
pub(crate) struct AttemptBatch<'a> {
    folds: Vec<Fold<'a>>,
    index: HashMap<Key, usize>,
}

impl<'a> AttemptBatch<'a> {
    /// Folds one newly applied event in; events without an attempt effect
    /// are ignored.
    pub fn add(&mut self, d: &'a Delivered, ts: DateTime<Utc>) {
        let e = &d.event;
        let touches = matches!(
            e.body,
            EventBody::AttemptStarted
                | EventBody::PromptAssembled { .. }
                | EventBody::ScriptProposed { .. }
                | EventBody::AttemptEvaluated { .. }
                | EventBody::LessonProposed { .. }
                | EventBody::ReflectionFailed { .. }
        );
        if !touches {
            return;
        }
        let key = (e.task.0, e.epoch.0 as i64, e.attempt as i32);
        let i = *self.index.entry(key).or_insert_with(|| {
            self.folds.push(Fold {
                key,
                agent: e.agent.as_str(),
                first_ts: ts,
                started: None,
                script: None,
                source: None,
                eval: None,
                reflection: None,
                lessons: Vec::new(),
            });
            self.folds.len() - 1
        });
        let f = &mut self.folds[i];
        match &e.body {
            EventBody::AttemptStarted => {
                f.started = Some(f.started.map_or(ts, |s| s.min(ts)));
            }
            EventBody::PromptAssembled { lessons, .. } => f.lessons.extend(lessons.iter()),
            EventBody::ScriptProposed { script, source } => {
                f.script = Some(script);
                f.source = Some(source);
            }
            EventBody::AttemptEvaluated {
                status,
                health_ok,
                health_failed,
                ..
            } => {
                f.eval = Some(Eval {
                    status: serde_json::to_value(status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned)),
                    health_ok: *health_ok,
                    at: ts,
                    health_failed,
                });
            }
            EventBody::LessonProposed { .. } => f.reflection = Some("lesson"),
            EventBody::ReflectionFailed { reason } => f.reflection = Some(reason.as_str()),
            _ => {}
        }
    }

    pub async fn write(mut self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.folds.is_empty() {
            return Ok(());
        }
        // Rows are locked in key order, so two consumers' batches that share
        // attempts (one split across their batches) cannot deadlock.
        self.folds.sort_unstable_by_key(|f| f.key);
        let n = self.folds.len();
        let (mut items, mut epochs, mut attempts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut agents, mut started, mut scripts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut sources, mut blobs, mut commits) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut statuses, mut health_ok, mut evaluated_at, mut health_failed, mut reflections) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for f in &self.folds {
            items.push(f.key.0);
            epochs.push(f.key.1);
            attempts.push(f.key.2);
            agents.push(f.agent);
            // A new row starts at the earlier of its first event and its
            // `attempt_started`, as if each event had been applied in turn.
            started.push(f.started.map_or(f.first_ts, |s| s.min(f.first_ts)));
            scripts.push(f.script);
            sources.push(f.source.map(ScriptSource::as_str));
            let (blob, commit) = match f.source {
                Some(ScriptSource::Skill { blob, commit }) => {
                    (Some(blob.as_str()), Some(commit.as_str()))
                }
                _ => (None, None),
            };
            blobs.push(blob);
            commits.push(commit);
            statuses.push(f.eval.as_ref().and_then(|e| e.status.clone()));
            health_ok.push(f.eval.as_ref().map(|e| e.health_ok));
            evaluated_at.push(f.eval.as_ref().map(|e| e.at));
            health_failed.push(
                f.eval
                    .as_ref()
                    .map(|e| serde_json::to_string(e.health_failed).unwrap_or_default()),
            );
            reflections.push(f.reflection);
        }
        let rows: Vec<(i64, i64, i64, i32, bool)> = sqlx::query_as(
            "INSERT INTO attempts AS a (work_item_id, epoch, attempt, agent_id, started_at, script,
                                        eval_status, health_ok, evaluated_at, health_failed, reflection,
                                        script_source, skill_blob, skill_commit)
             SELECT u.item, u.epoch, u.attempt, u.agent, u.started, u.script, u.status, u.health_ok,
                    u.evaluated_at, ARRAY(SELECT jsonb_array_elements_text(u.hf::jsonb)), u.reflection,
                    u.source, u.blob, u.commit
             FROM UNNEST($1::int8[], $2::int8[], $3::int4[], $4::text[], $5::timestamptz[], $6::text[],
                         $7::text[], $8::bool[], $9::timestamptz[], $10::text[], $11::text[],
                         $12::text[], $13::text[], $14::text[])
                  AS u(item, epoch, attempt, agent, started, script, status, health_ok, evaluated_at, hf,
                       reflection, source, blob, commit)
             ON CONFLICT (work_item_id, epoch, attempt) DO UPDATE SET
                script = COALESCE(EXCLUDED.script, a.script),
                -- The source travels with the script: both or neither.
                script_source = CASE WHEN EXCLUDED.script IS NULL THEN a.script_source ELSE EXCLUDED.script_source END,
                skill_blob = CASE WHEN EXCLUDED.script IS NULL THEN a.skill_blob ELSE EXCLUDED.skill_blob END,
                skill_commit = CASE WHEN EXCLUDED.script IS NULL THEN a.skill_commit ELSE EXCLUDED.skill_commit END,
                eval_status = CASE WHEN EXCLUDED.evaluated_at IS NULL THEN a.eval_status ELSE EXCLUDED.eval_status END,
                health_ok = CASE WHEN EXCLUDED.evaluated_at IS NULL THEN a.health_ok ELSE EXCLUDED.health_ok END,
                health_failed = CASE WHEN EXCLUDED.evaluated_at IS NULL THEN a.health_failed ELSE EXCLUDED.health_failed END,
                evaluated_at = COALESCE(EXCLUDED.evaluated_at, a.evaluated_at),
                reflection = COALESCE(EXCLUDED.reflection, a.reflection)
             RETURNING a.id, a.work_item_id, a.epoch, a.attempt, (a.xmax = 0) AS inserted",
        )
        .bind(&items)
        .bind(&epochs)
        .bind(&attempts)
        .bind(&agents)
        .bind(&started)
        .bind(&scripts)
        .bind(&statuses)
        .bind(&health_ok)
        .bind(&evaluated_at)
        .bind(&health_failed)
        .bind(&reflections)
        .bind(&sources)
        .bind(&blobs)
        .bind(&commits)
        .fetch_all(&mut *tx)
        .await?;

        let ids: HashMap<Key, (i64, bool)> = rows
            .into_iter()
            .map(|(id, item, epoch, attempt, inserted)| ((item, epoch, attempt), (id, inserted)))
            .collect();

        // Rows that existed before this batch: an earlier `attempt_started`
        // moves `started_at` back, never forward.
        let (mut moved_ids, mut moved_ts) = (Vec::new(), Vec::new());
        let (mut att_ids, mut lesson_ids, mut ranks, mut scores) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for f in &self.folds {
            let Some(&(id, inserted)) = ids.get(&f.key) else {
                continue;
            };
            if let (Some(ts), false) = (f.started, inserted) {
                moved_ids.push(id);
                moved_ts.push(ts);
            }
            for l in &f.lessons {
                att_ids.push(id);
                lesson_ids.push(l.id.as_str());
                ranks.push(l.rank as i32);
                scores.push(l.score);
            }
        }
        if !moved_ids.is_empty() {
            sqlx::query(
                "UPDATE attempts a SET started_at = LEAST(a.started_at, u.ts)
                 FROM UNNEST($1::int8[], $2::timestamptz[]) AS u(id, ts)
                 WHERE a.id = u.id AND u.ts < a.started_at",
            )
            .bind(&moved_ids)
            .bind(&moved_ts)
            .execute(&mut *tx)
            .await?;
        }
        if !att_ids.is_empty() {
            sqlx::query(
                "INSERT INTO lesson_attributions (attempt_id, lesson_id, rank, score)
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::float8[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(&att_ids)
            .bind(&lesson_ids)
            .bind(&ranks)
            .bind(&scores)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
