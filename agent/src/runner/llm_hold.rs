//! The LLM hold: when the brain's endpoint goes down mid-run, the lease in
//! hand is handed back (not escalated, no lease loss) and no slot leases
//! again until `/models` answers with the key and the model. One prober
//! per hold, shared by every slot; probes back off up to `probe_max`.
//! Tasks stay queued meanwhile (another agent may take them).

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::llm::{EndpointError, ModelsProbe};
use crate::metrics::AgentMetrics;
use crate::spawn::spawn;

/// First pause before probing an endpoint that just failed: its own
/// retries were spent a moment ago.
const FIRST_PROBE_AFTER: Duration = Duration::from_millis(500);

pub struct LlmHold {
    probe: ModelsProbe,
    probe_max: Duration,
    /// `true` while the endpoint is taken to answer.
    up: watch::Sender<bool>,
    metrics: AgentMetrics,
    shutdown: CancellationToken,
}

impl LlmHold {
    /// An endpoint that passed its start check.
    pub fn new(
        probe: ModelsProbe,
        probe_max: Duration,
        metrics: AgentMetrics,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        metrics.llm().available.set(1);
        Arc::new(Self {
            probe,
            probe_max: probe_max.max(FIRST_PROBE_AFTER),
            up: watch::Sender::new(true),
            metrics,
            shutdown,
        })
    }

    /// A slot found the endpoint down: stop leasing and start probing,
    /// unless a hold is already on.
    pub fn enter(self: &Arc<Self>, error: &str) {
        if !self.up.send_replace(false) {
            return;
        }
        warn!(
            llm_hold = "enter",
            url = self.probe.url(),
            error,
            "LLM endpoint unavailable: leases handed back, no new ones until it answers"
        );
        self.metrics.llm().available.set(0);
        self.metrics.llm().holds.inc();
        // Its own root span: the lease that entered the hold is over.
        let span = tracing::info_span!(parent: None, "llm_hold", url = self.probe.url());
        spawn("llm-probe", self.clone().probe_until_up().instrument(span));
    }

    /// Waits until no hold is on; `false` when shutdown came first.
    pub async fn until_up(&self) -> bool {
        let mut rx = self.up.subscribe();
        tokio::select! {
            r = rx.wait_for(|up| *up) => r.is_ok(),
            _ = self.shutdown.cancelled() => false,
        }
    }

    async fn probe_until_up(self: Arc<Self>) {
        let since = Instant::now();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_PROBE_AFTER)
            .with_max_delay(self.probe_max)
            .with_jitter()
            .without_max_times();
        let probes = async {
            tokio::time::sleep(FIRST_PROBE_AFTER).await;
            (|| self.probe.check())
                .retry(backoff)
                .notify(|e: &EndpointError, wait| {
                    warn!(llm_hold = "probe", error = %e, retry_in_ms = wait.as_millis() as u64, "LLM endpoint still unavailable")
                })
                .await
        };
        tokio::select! {
            _ = probes => {}
            _ = self.shutdown.cancelled() => return,
        }
        let held_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(
            llm_hold = "leave",
            held_ms, "LLM endpoint answers again: leasing resumes"
        );
        self.metrics.llm().available.set(1);
        self.up.send_replace(true);
    }
}
