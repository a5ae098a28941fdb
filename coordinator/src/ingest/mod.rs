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
use stream::StreamEntry;

/// Entries per batch (and per transaction).
const BATCH: usize = 2048;
/// How often an idle ingester looks for new entries. The read cannot block
/// in Redis (see [`stream::read_group`]), so it polls.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Entries another consumer left pending this long are taken over.
const CLAIM_IDLE_MS: u64 = 30_000;
const CLAIM_EVERY: Duration = Duration::from_secs(10);
/// How long `run` waits for new entries per call to `run_once`.
const RUN_BLOCK: Duration = Duration::from_millis(200);

/// Quarantine reason of an event Postgres refused to store.
const REFUSED: &str = "refused_by_postgres";

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
    /// Waits up to `block` for entries to arrive.
    pub async fn run_once(&self, block: Duration) -> Result<IngestReport, CoordinatorError> {
        let deadline = Instant::now() + block;
        loop {
            let (report, entries) = self.step().await?;
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
        loop {
            let (report, entries) = self.step().await?;
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
        while !shutdown.is_cancelled() {
            match self.run_once(RUN_BLOCK).await {
                Ok(_) => delays = backoff(),
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "ingest batch failed; will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!("ingester stopped");
    }

    async fn step(&self) -> Result<(IngestReport, usize), CoordinatorError> {
        let entries = self.read_batch().await?;
        if entries.is_empty() {
            return Ok((IngestReport::default(), 0));
        }
        let report = self.apply(&entries).await?;
        Ok((report, entries.len()))
    }

    async fn read_batch(&self) -> Result<Vec<StreamEntry>, CoordinatorError> {
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
            return Ok(own);
        }
        self.read(&mut conn, ">").await
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

    async fn apply(&self, entries: &[StreamEntry]) -> Result<IngestReport, CoordinatorError> {
        let fx = match self.commit(entries).await {
            Err(CoordinatorError::Postgres(e)) if is_refused_data(&e) => {
                tracing::warn!(error = %e, entries = entries.len(),
                    "postgres refused a batch; applying its entries one by one");
                self.commit_one_by_one(entries).await?
            }
            other => other?,
        };
        let report = self.record(&fx, entries);

        // Acknowledge only after the commit (E2). If this fails the entries
        // stay pending and are re-read and found to be duplicates.
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let mut conn = self.leases.connection();
        stream::ack(&mut conn, &self.stream, &ids).await?;
        let last = ids.last().expect("batch is not empty");
        if let Err(error) = stream::trim(&mut conn, &self.stream, last).await {
            tracing::warn!(%error, "stream trim failed; retried after the next batch");
        }
        Ok(report)
    }

    async fn commit(&self, entries: &[StreamEntry]) -> Result<Effects, CoordinatorError> {
        let mut tx = self.pool.begin().await?;
        let fx = apply::apply_batch(&mut tx, entries).await?;
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
            match self.commit(std::slice::from_ref(entry)).await {
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
