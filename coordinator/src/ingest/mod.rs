//! The event ingester (DESIGN E2, E3, L7): reads the event stream through the
//! `ingest` consumer group, applies each batch in one Postgres transaction,
//! acknowledges only after the commit, then trims what is acknowledged.
//!
//! Delivery is at-least-once; application is exactly-once because every
//! effect hangs off a newly inserted `run_events` row (keyed by event id).

mod apply;
mod attempts;
mod decode;
mod outcomes;
mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use fleet_common::event::FIELD_EVENT;
use fleet_common::lease::LeaseClient;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::CoordinatorError;
use crate::metrics::Metrics;
use apply::Effects;
use decode::{decode, Decoded};
use stream::StreamEntry;

/// Entries per batch (and per transaction).
const BATCH: usize = 2048;
/// How often an idle ingester looks for new entries. The read cannot block
/// in Redis (see [`stream::read_group`]), so it polls.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Entries another consumer left pending this long are taken over.
const CLAIM_IDLE_MS: u64 = 30_000;
const CLAIM_EVERY: Duration = Duration::from_secs(10);

/// Ingest workers a coordinator runs by default: two batches in flight keep
/// both of Postgres' cores of a small host busy (one batch is one backend).
pub const DEFAULT_WORKERS: usize = 3;

/// Consumer names of a coordinator's `workers` ingest workers. Each worker
/// is a consumer of its own in the group, as another coordinator would be,
/// so the same race and lock-order rules keep them apart. The first keeps
/// `base` itself, so its pending entries survive a change of the count.
pub fn worker_consumers(base: &str, workers: usize) -> Vec<String> {
    (0..workers.max(1))
        .map(|i| match i {
            0 => base.to_owned(),
            i => format!("{base}/{i}"),
        })
        .collect()
}

/// Drains the stream with all `ingesters` at once (see [`Ingester::drain`]).
pub async fn drain_all(ingesters: &[Ingester]) -> Result<IngestReport, CoordinatorError> {
    let reports = futures_util::future::try_join_all(ingesters.iter().map(Ingester::drain)).await?;
    let mut total = IngestReport::default();
    for r in reports {
        total += r;
    }
    Ok(total)
}

/// Quarantine reason of an event Postgres refused to store.
const REFUSED: &str = "refused_by_postgres";

/// Times a batch is retried after losing a race for an event id or a lock
/// conflict with another consumer.
const RACE_RETRIES: u32 = 3;

/// A unique violation on `run_events`' key: another consumer committed one
/// of the batch's events between its look-up and its `COPY`.
fn is_event_id_race(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some("run_events_pkey")
        }
        _ => false,
    }
}

/// Postgres rolled the batch back to break a lock cycle with another
/// consumer's batch (or a serialization conflict): nothing of it stands,
/// and the same batch can simply run again.
fn is_transient_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// Data exceptions (22xxx) and integrity violations (23xxx) are about the
/// event itself; anything else (connection, missing table) is retried.
fn is_refused_data(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

/// What `drain` and `run` carry from one batch to the next.
#[derive(Default)]
struct Pipeline {
    /// Entries read (and so pending for this consumer) while the previous
    /// batch committed.
    ahead: Option<Batch>,
    /// Ids of the last committed batch, acknowledged with the next one.
    committed: Vec<String>,
}

/// Entries read from the stream, each sorted by [`decode`] (in the same
/// order).
struct Batch {
    entries: Vec<StreamEntry>,
    decoded: Vec<Decoded>,
}

impl Batch {
    fn decode(entries: Vec<StreamEntry>) -> Self {
        let decoded = entries.iter().map(decode).collect();
        Self { entries, decoded }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Events applied for the first time (stale completions excluded).
    pub applied: u64,
    /// Redeliveries of events already in Postgres.
    pub duplicates: u64,
    /// Entries newly quarantined.
    pub quarantined: u64,
    /// Completions the lease script refused, newly recorded.
    pub rejected_completions: u64,
}

impl std::ops::AddAssign for IngestReport {
    fn add_assign(&mut self, o: Self) {
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.quarantined += o.quarantined;
        self.rejected_completions += o.rejected_completions;
    }
}

pub struct Ingester {
    pool: PgPool,
    leases: LeaseClient,
    metrics: Metrics,
    consumer: String,
    stream: String,
    group_ready: AtomicBool,
    last_claim: Mutex<Option<Instant>>,
}

impl Ingester {
    pub fn new(pool: PgPool, leases: LeaseClient, metrics: Metrics, consumer: String) -> Self {
        let stream = leases.keys().events();
        Self {
            pool,
            leases,
            metrics,
            consumer,
            stream,
            group_ready: AtomicBool::new(false),
            last_claim: Mutex::new(None),
        }
    }

    /// One batch: this consumer's own pending entries first (a restarted
    /// coordinator re-applies what it had not acknowledged), else new ones.
    /// Waits up to `block` for entries to arrive. Reads nothing ahead.
    pub async fn run_once(&self, block: Duration) -> Result<IngestReport, CoordinatorError> {
        let deadline = Instant::now() + block;
        loop {
            let (report, entries) = self.step(None).await?;
            let now = Instant::now();
            if entries > 0 || now >= deadline {
                return Ok(report);
            }
            tokio::time::sleep(IDLE_POLL.min(deadline - now)).await;
        }
    }

    /// Runs batches until the stream has nothing left for this consumer.
    pub async fn drain(&self) -> Result<IngestReport, CoordinatorError> {
        let mut total = IngestReport::default();
        let mut pipeline = Pipeline::default();
        loop {
            let (report, entries) = self.step(Some(&mut pipeline)).await?;
            total += report;
            if entries == 0 {
                return Ok(total);
            }
        }
    }

    /// The worker loop. A failed batch (Redis or Postgres away) is retried
    /// with backoff; on shutdown the batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        let mut pipeline = Pipeline::default();
        while !shutdown.is_cancelled() {
            match self.step(Some(&mut pipeline)).await {
                Ok((_, 0)) => {
                    delays = backoff();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
                Ok(_) => delays = backoff(),
                Err(error) => {
                    // What the pipeline held stays pending in the group and
                    // is read again from this consumer's pending entries.
                    pipeline = Pipeline::default();
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, consumer = %self.consumer, retry_in_ms = delay.as_millis() as u64, "ingest batch failed; will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        if let Err(error) = self.flush(&mut pipeline).await {
            tracing::warn!(%error, "last batch not acknowledged; it will be read again and found applied");
        }
        tracing::info!(consumer = %self.consumer, "ingester stopped");
    }

    /// Applies one batch. Without a pipeline: reads it, commits it and
    /// acknowledges it. With one: takes the batch read ahead (or, with
    /// nothing read ahead, acknowledges what is committed and reads), then
    /// commits it while acknowledging the previous batch and reading and
    /// decoding the next one, so that Postgres is not kept waiting on Redis
    /// or on decoding. Answers the report and the number of entries handled.
    async fn step(
        &self,
        pipeline: Option<&mut Pipeline>,
    ) -> Result<(IngestReport, usize), CoordinatorError> {
        let Some(p) = pipeline else {
            let batch = self.read_batch().await?;
            let n = batch.entries.len();
            if n == 0 {
                return Ok((IngestReport::default(), 0));
            }
            let (report, ids) = self.commit_batch(batch).await?;
            self.ack(&ids).await?;
            return Ok((report, n));
        };
        let batch = match p.ahead.take() {
            Some(batch) if !batch.entries.is_empty() => batch,
            _ => {
                // This consumer's pending entries are read first: the
                // committed batch must be acknowledged before.
                self.flush(p).await?;
                self.read_batch().await?
            }
        };
        let n = batch.entries.len();
        if n == 0 {
            return Ok((IngestReport::default(), 0));
        }
        // Entries read ahead are delivered to this consumer (pending) but
        // not acknowledged: if this batch fails they are read again.
        let next = async {
            let mut conn = self.leases.connection();
            self.read(&mut conn, ">").await.map(Batch::decode)
        };
        let previous = std::mem::take(&mut p.committed);
        let (committed, acked, next) =
            tokio::join!(self.commit_batch(batch), self.ack(&previous), next);
        let (report, ids) = committed?;
        p.committed = ids;
        acked?;
        match next {
            Ok(next) => p.ahead = Some(next),
            Err(error) => tracing::warn!(%error, "could not read ahead; reading again next batch"),
        }
        Ok((report, n))
    }

    /// Acknowledges the committed batch the pipeline holds.
    async fn flush(&self, p: &mut Pipeline) -> Result<(), CoordinatorError> {
        let ids = std::mem::take(&mut p.committed);
        self.ack(&ids).await
    }

    async fn read_batch(&self) -> Result<Batch, CoordinatorError> {
        let mut conn = self.leases.connection();
        if !self.group_ready.load(Ordering::Relaxed) {
            stream::ensure_group(&mut conn, &self.stream).await?;
            self.group_ready.store(true, Ordering::Relaxed);
        }
        if self.claim_due() {
            if let Err(error) =
                stream::claim_abandoned(&mut conn, &self.stream, &self.consumer, CLAIM_IDLE_MS)
                    .await
            {
                tracing::warn!(%error, "could not claim entries abandoned by other consumers");
            }
        }
        let own = self.read(&mut conn, "0").await?;
        if !own.is_empty() {
            return Ok(Batch::decode(own));
        }
        Ok(Batch::decode(self.read(&mut conn, ">").await?))
    }

    /// Reads once; a missing group (Redis came back empty) is re-created
    /// and the read retried.
    async fn read(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        start: &str,
    ) -> Result<Vec<StreamEntry>, CoordinatorError> {
        match stream::read_group(conn, &self.stream, &self.consumer, start, BATCH).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(
                    "ingest consumer group is gone (redis lost its data?); re-creating it"
                );
                stream::ensure_group(conn, &self.stream).await?;
                Ok(stream::read_group(conn, &self.stream, &self.consumer, start, BATCH).await?)
            }
            other => Ok(other?),
        }
    }

    fn claim_due(&self) -> bool {
        let mut last = self.last_claim.lock().expect("claim clock lock");
        let due = last.is_none_or(|t| t.elapsed() >= CLAIM_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Commits one batch (isolating an entry Postgres refuses) and records
    /// its effects; answers the report and the entries' ids, to acknowledge.
    async fn commit_batch(
        &self,
        batch: Batch,
    ) -> Result<(IngestReport, Vec<String>), CoordinatorError> {
        let Batch { entries, decoded } = batch;
        let fx = match self.commit(&entries, decoded).await {
            Err(CoordinatorError::Postgres(e)) if is_refused_data(&e) => {
                tracing::warn!(error = %e, entries = entries.len(),
                    "postgres refused a batch; applying its entries one by one");
                self.commit_one_by_one(&entries).await?
            }
            other => other?,
        };
        let report = self.record(&fx, &entries);
        Ok((report, entries.into_iter().map(|e| e.id).collect()))
    }

    /// Acknowledges committed entries (E2: only after their commit) in one
    /// command, then trims (L7). If this fails they stay pending, are read
    /// again and found to be redeliveries.
    async fn ack(&self, ids: &[String]) -> Result<(), CoordinatorError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut conn = self.leases.connection();
        stream::ack_and_trim(&mut conn, &self.stream, &ids).await?;
        Ok(())
    }

    /// Commits one batch. A batch that lost a race for an event id with
    /// another consumer (see `apply::insert_events`) is retried: the
    /// retry finds that event stored and treats it as a redelivery.
    async fn commit(
        &self,
        entries: &[StreamEntry],
        decoded: Vec<Decoded>,
    ) -> Result<Effects, CoordinatorError> {
        let mut decoded = Some(decoded);
        let mut races = 0;
        loop {
            let d = decoded
                .take()
                .unwrap_or_else(|| entries.iter().map(decode).collect());
            match self.commit_once(entries, d).await {
                Err(CoordinatorError::Postgres(e))
                    if is_event_id_race(&e) && races < RACE_RETRIES =>
                {
                    races += 1;
                    tracing::info!(error = %e, "another consumer stored an event of this batch first; retrying the batch");
                }
                Err(CoordinatorError::Postgres(e))
                    if is_transient_conflict(&e) && races < RACE_RETRIES =>
                {
                    races += 1;
                    self.metrics.ingest_conflicts.inc();
                    tracing::info!(error = %e, "batch conflicted with another consumer's; retrying the batch");
                }
                other => return other,
            }
        }
    }

    async fn commit_once(
        &self,
        entries: &[StreamEntry],
        decoded: Vec<Decoded>,
    ) -> Result<Effects, CoordinatorError> {
        let mut tx = self.pool.begin().await?;
        let fx = apply::apply_batch(&mut tx, entries, decoded).await?;
        tx.commit().await?;
        Ok(fx)
    }

    /// Isolates the entry Postgres refuses and quarantines it, so one event
    /// that slipped past decoding cannot stop ingestion (E3). Entries before
    /// it are committed; nothing is acknowledged until all are done.
    async fn commit_one_by_one(
        &self,
        entries: &[StreamEntry],
    ) -> Result<Effects, CoordinatorError> {
        let mut total = Effects::default();
        for entry in entries {
            match self
                .commit(std::slice::from_ref(entry), vec![decode(entry)])
                .await
            {
                Err(CoordinatorError::Postgres(e)) if is_refused_data(&e) => {
                    let raw = entry
                        .field(FIELD_EVENT)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_else(|| entry.raw());
                    let detail = format!("postgres refused the event: {e}");
                    let mut conn = self.pool.acquire().await?;
                    if apply::quarantine(&mut conn, &entry.id, REFUSED, &detail, &raw).await? {
                        total.quarantined.push(REFUSED);
                    }
                }
                other => total.merge(other?),
            }
        }
        Ok(total)
    }

    fn record(&self, fx: &Effects, entries: &[StreamEntry]) -> IngestReport {
        let m = &self.metrics;
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (kind, _) in &fx.applied {
            m.events_ingested.with_label_values(&[*kind]).inc();
        }
        // Lag: age of each entry at commit, by its stream id (the time Redis
        // appended it), so agents' clocks do not enter.
        for entry in entries {
            if let Some(appended_ms) = entry.appended_ms() {
                m.ingest_lag
                    .observe((now_ms - appended_ms).max(0) as f64 / 1000.0);
            }
        }
        for reason in &fx.quarantined {
            m.events_quarantined.with_label_values(&[*reason]).inc();
        }
        for (outcome, reason) in &fx.outcomes {
            m.outcomes.with_label_values(&[*outcome, *reason]).inc();
        }
        m.stale_completions.inc_by(fx.rejected_completions);
        m.duplicate_outcomes.inc_by(fx.duplicate_outcomes);
        m.ingest_batches.inc();
        for run in &fx.completed_runs {
            tracing::info!(run, "run completed");
        }
        IngestReport {
            applied: fx.applied.len() as u64,
            duplicates: fx.duplicates,
            quarantined: fx.quarantined.len() as u64,
            rejected_completions: fx.rejected_completions,
        }
    }
}
