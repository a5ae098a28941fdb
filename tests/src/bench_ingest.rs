//! `fleet-bench ingest`: the coordinator's ingester against `psql \copy` of
//! the same rows into a scratch copy of the same table, in the same run.
//!
//! 1. `events` events of a realistic mix (what [`crate::loadgen`] agents
//!    send, about eight per task) are appended to the stream, then the
//!    coordinator's ingest workers drain it: `events_per_s`.
//! 2. The `run_events` rows they wrote are exported and `\copy`-ed into
//!    `copy_scratch (LIKE run_events INCLUDING ALL)`: `copy_rows_per_s`.
//!    The ingester also wrote attempts, attributions, lessons and outcomes;
//!    COPY wrote only the event rows. Both are measured in [`ROUNDS`]
//!    alternating rounds and reported as medians.
//! 3. Lag: events appended at half the measured rate for a few seconds while
//!    the ingester runs as in the coordinator; p99 of
//!    `fleet_ingest_lag_seconds` (stream append to commit).

use std::process::Command;
use std::time::{Duration, Instant};

use fleet_common::event::{EVENT_VERSION, FIELD_EVENT};
use fleet_common::lease::QueuedTask;
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Epoch, Event, EventId};
use fleet_coordinator::ingest::{drain_all, worker_consumers, Ingester, DEFAULT_WORKERS};
use fleet_coordinator::metrics::Metrics;
use tokio_util::sync::CancellationToken;

use crate::coord::TestCoordinator;
use crate::loadgen::{bench_run, event_mix};
use crate::services::database_url;

const COLUMNS: &str =
    "event_id, stream_id, run_id, work_item_id, kind, rejected, agent_id, incarnation, seq, epoch, attempt, ts, body";

pub struct IngestFigures {
    pub events: usize,
    pub events_per_s: f64,
    pub copy_rows_per_s: f64,
    pub lag_p99_ms: f64,
    /// Postgres rows the ingester wrote per event, for the drained events
    /// and for the lag phase's (a different count of the same mix).
    pub rows_per_event_at: [(usize, f64); 2],
}

impl IngestFigures {
    pub fn line(&self) -> String {
        format!(
            "bench ingest: events={} events_per_s={:.0} copy_rows_per_s={:.0} ratio={:.2} lag_p99_ms={:.0} \
             pg_rows_per_event_at={}:{:.3},{}:{:.3} goal_met={}",
            self.events,
            self.events_per_s,
            self.copy_rows_per_s,
            self.events_per_s / self.copy_rows_per_s,
            self.lag_p99_ms,
            self.rows_per_event_at[0].0,
            self.rows_per_event_at[0].1,
            self.rows_per_event_at[1].0,
            self.rows_per_event_at[1].1,
            self.goal_met(),
        )
    }

    /// Ratio at least [`RATIO_GOAL`] and rows per event the same at both
    /// sizes.
    pub fn goal_met(&self) -> bool {
        let [(_, a), (_, b)] = self.rows_per_event_at;
        self.events_per_s / self.copy_rows_per_s >= RATIO_GOAL && (a - b).abs() < 1e-3
    }
}

/// The goal for `events_per_s / copy_rows_per_s` on a 2-core host.
pub const RATIO_GOAL: f64 = 0.5;

/// Rounds of each measurement; the figures are the medians, so that one
/// round that met a checkpoint or an AOF rewrite does not decide the ratio.
const ROUNDS: usize = 3;

pub async fn bench_ingest(events: usize, lag_window: Duration) -> anyhow::Result<IngestFigures> {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let mut conn = c.queue.conn();
    let stream = c.queue.keys.events();
    // The coordinator's ingest workers, as `serve` runs them.
    let ingesters = |metrics: &Metrics| -> Vec<Ingester> {
        worker_consumers("bench", DEFAULT_WORKERS)
            .into_iter()
            .map(|consumer| {
                Ingester::new(
                    c.db.pool.clone(),
                    c.queue.client.clone(),
                    metrics.clone(),
                    consumer,
                )
            })
            .collect()
    };

    // Each round: a run's events drained by the ingester, then the same
    // rows `\copy`-ed into `copy_scratch`, which grows round by round as
    // `run_events` does.
    copy_scratch(&c.db.schema)?;
    let (mut ingest_rates, mut copy_rates) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let tasks = bench_run(&c.db.pool, (events / 8 + 1) as i64).await?;
        let all = realistic_events(&tasks, events);
        append(&mut conn, &stream, &all).await?;
        aof_rewrite_done(&mut conn).await?;
        let started = Instant::now();
        let report = drain_all(&ingesters(&c.metrics)).await?;
        ingest_rates.push(events as f64 / started.elapsed().as_secs_f64());
        anyhow::ensure!(
            report.applied as usize == events && report.quarantined == 0,
            "ingested {report:?} of {events} events"
        );
        copy_rates.push(copy_rate(&c.db.schema, tasks[0].task.run.0, events)?);
        eprintln!(
            "bench ingest: round {}/{ROUNDS} events_per_s={:.0} copy_rows_per_s={:.0}",
            copy_rates.len(),
            ingest_rates[copy_rates.len() - 1],
            copy_rates[copy_rates.len() - 1]
        );
    }
    let (events_per_s, copy_rows_per_s) = (median(ingest_rates), median(copy_rates));
    let rows_drained = ingested_rows(&c.db.pool).await?;

    // Lag at half the measured rate, the ingester running as in `serve`.
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let workers: Vec<_> = ingesters(&metrics)
        .into_iter()
        .map(|live| tokio::spawn(live.run(stop.clone())))
        .collect();
    let per_tick = ((events_per_s / 2.0) / 100.0).max(1.0) as usize;
    let lag_events = (per_tick as f64 * 100.0 * lag_window.as_secs_f64()) as usize;
    let lag_tasks = bench_run(&c.db.pool, (lag_events / 8 + 1) as i64).await?;
    let more = realistic_events(&lag_tasks, lag_events);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for chunk in more.chunks(per_tick) {
        tick.tick().await;
        append(&mut conn, &stream, chunk).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while metrics.ingested_total() < more.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for worker in workers {
        worker.await?;
    }
    let lag_p99_ms = histogram_quantile(&metrics.render(), "fleet_ingest_lag_seconds", 0.99)
        .map_or(f64::NAN, |s| s * 1000.0);

    let rows_lag = ingested_rows(&c.db.pool).await? - rows_drained;
    c.db.drop_schema().await?;
    Ok(IngestFigures {
        events,
        events_per_s,
        copy_rows_per_s,
        lag_p99_ms,
        rows_per_event_at: [
            (
                ROUNDS * events,
                rows_drained as f64 / (ROUNDS * events) as f64,
            ),
            (more.len(), rows_lag as f64 / more.len() as f64),
        ],
    })
}

/// Rows in every table the ingester writes (`copy_scratch` is not one).
async fn ingested_rows(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM run_events) + (SELECT count(*) FROM attempts)
              + (SELECT count(*) FROM lesson_attributions) + (SELECT count(*) FROM lessons)
              + (SELECT count(*) FROM quarantined_events)",
    )
    .fetch_one(pool)
    .await?)
}

async fn append(
    conn: &mut redis::aio::ConnectionManager,
    stream: &str,
    events: &[Event],
) -> anyhow::Result<()> {
    for chunk in events.chunks(1000) {
        let mut pipe = redis::pipe();
        for e in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(FIELD_EVENT)
                .arg(e.to_json())
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}

/// Waits for an append-only-file rewrite to end. Appending a whole run's
/// events at once (about 200 MB) doubles the AOF and sets one off, which
/// would then share the cores with the timed drain; agents append over the
/// whole run. Redis starts a due rewrite within a tick of its cron (100 ms
/// at the default `hz`), hence the first pause.
async fn aof_rewrite_done(conn: &mut redis::aio::ConnectionManager) -> anyhow::Result<()> {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(250)).await;
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(conn)
            .await?;
        let busy = info.lines().any(|l| {
            matches!(
                l.trim(),
                "aof_rewrite_in_progress:1" | "aof_rewrite_scheduled:1"
            )
        });
        if !busy {
            if started.elapsed() > Duration::from_secs(1) {
                eprintln!(
                    "bench ingest: waited {:.1}s for Redis's AOF rewrite before draining",
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "Redis's AOF rewrite did not end within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `psql -c sql` in `schema`.
fn psql(schema: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .arg(database_url())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run psql ({e}): install postgresql-client"))?;
    anyhow::ensure!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A scratch copy of `run_events`: same columns, indexes and defaults.
fn copy_scratch(schema: &str) -> anyhow::Result<()> {
    psql(
        schema,
        "CREATE TABLE copy_scratch (LIKE run_events INCLUDING ALL)",
    )
}

/// The `run_events` rows of `run` `\copy`-ed into `copy_scratch`, per
/// second of the `\copy` itself.
fn copy_rate(schema: &str, run: i64, rows: usize) -> anyhow::Result<f64> {
    let file = std::env::temp_dir().join(format!("fleet-bench-{schema}.copy"));
    psql(
        schema,
        &format!(
            "\\copy (SELECT {COLUMNS} FROM run_events WHERE run_id = {run}) TO '{}'",
            file.display()
        ),
    )?;
    let started = Instant::now();
    psql(
        schema,
        &format!("\\copy copy_scratch ({COLUMNS}) FROM '{}'", file.display()),
    )?;
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What simulated agents send for `tasks` ([`event_mix`], as the agents of
/// `fleet-bench scale` do), cut at `n` events, from 64 agents.
pub fn realistic_events(tasks: &[QueuedTask], n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    let mut seqs = vec![0u64; 64];
    let now = chrono::Utc::now().timestamp_millis();
    let epoch = Epoch(1 << 20 | 1);
    'tasks: for (i, t) in tasks.iter().enumerate() {
        let slot = i % seqs.len();
        let agent = AgentId(format!("bench-{slot}"));
        let mix = event_mix(i as u64, &t.task, epoch, now + 2000, Duration::from_secs(2));
        let attempts = (1..).zip(mix.attempts).flat_map(|(a, events)| {
            events
                .before_work
                .into_iter()
                .chain(events.after_work)
                .map(move |body| (a, body))
        });
        let bodies = std::iter::once((0, mix.acquired))
            .chain(attempts)
            .chain(std::iter::once((0, mix.completed)));
        for (attempt, body) in bodies {
            if out.len() == n {
                break 'tasks;
            }
            seqs[slot] += 1;
            out.push(Event {
                v: EVENT_VERSION,
                id: EventId::new_v7(),
                run: t.task.run,
                task: t.task.task,
                rule: t.task.rule.clone(),
                agent: agent.clone(),
                incarnation: 1,
                epoch,
                attempt,
                seq: seqs[slot],
                ts_ms: now,
                body,
            });
        }
    }
    out
}

/// `histogram_quantile` over one histogram in a text exposition, with
/// linear interpolation inside the bucket, as Prometheus does.
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lo);
            }
            return Some(lo + (le - lo) * (rank - below) / (count - below).max(1.0));
        }
        (lo, below) = (le, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(events_per_s: f64, rows_per_event: [f64; 2]) -> IngestFigures {
        IngestFigures {
            events: 200_000,
            events_per_s,
            copy_rows_per_s: 100_000.0,
            lag_p99_ms: 50.0,
            rows_per_event_at: [(600_000, rows_per_event[0]), (250_000, rows_per_event[1])],
        }
    }

    #[test]
    fn the_goal_needs_the_ratio_and_fixed_rows_per_event() {
        assert!(figures(50_000.0, [1.758, 1.758]).goal_met());
        assert!(!figures(49_000.0, [1.758, 1.758]).goal_met());
        assert!(!figures(60_000.0, [1.758, 1.9]).goal_met());
    }
}
