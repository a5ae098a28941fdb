//! The lease loop: each slot leases a task, works it with its own
//! [`Workbench`], and ends the lease (see
//! [`LeaseEnd`]). Slots = workbenches. With an LLM brain, an endpoint
//! that goes down puts every slot on hold (see [`LlmHold`]).

mod lease_work;
mod llm_hold;
mod quota;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use fleet_common::lease::{LeaseClient, LeaseError};
use fleet_common::AgentId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

pub use lease_work::LeaseEnd;
pub use llm_hold::LlmHold;
use quota::{LeaseQuota, Ticket};

use crate::events::EventSink;
use crate::hosts::HostAccess;
use crate::knowledge::Knowledge;
use crate::metrics::AgentMetrics;
use crate::spawn::spawn;
use crate::workbench::Workbench;

/// Longest pause between lease calls while Redis keeps failing.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(2);

/// What the runner did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Leases completed (accepted or rejected).
    pub completed: u64,
}

pub struct Runner {
    client: LeaseClient,
    agent: AgentId,
    sink: EventSink,
    metrics: AgentMetrics,
    quota: LeaseQuota,
    shutdown: CancellationToken,
    knowledge: Option<Knowledge>,
    host_access: Option<HostAccess>,
    llm_hold: Option<Arc<LlmHold>>,
    /// `--llm-hold false`: a lease whose brain endpoint is down escalates
    /// `llm_unavailable` instead of going back to the queue.
    llm_outage_escalates: bool,
}

impl Runner {
    /// `max_leases`: stop after that many completed leases (`None`: never).
    pub fn new(
        client: LeaseClient,
        sink: EventSink,
        metrics: AgentMetrics,
        max_leases: Option<u64>,
        shutdown: CancellationToken,
    ) -> Self {
        let agent = sink.agent().clone();
        Self {
            client,
            agent,
            sink,
            metrics,
            quota: LeaseQuota::new(max_leases),
            shutdown,
            knowledge: None,
            host_access: None,
            llm_hold: None,
            llm_outage_escalates: false,
        }
    }

    /// Work each lease in its own worktree of the knowledge repo.
    pub fn with_knowledge(mut self, knowledge: Option<Knowledge>) -> Self {
        self.knowledge = knowledge;
        self
    }

    /// Reach inventory hosts through SSH sandboxes (harden tasks).
    pub fn with_host_access(mut self, access: Option<HostAccess>) -> Self {
        self.host_access = access;
        self
    }

    /// Hold all slots while the brain's endpoint is down.
    pub fn with_llm_hold(mut self, hold: Option<Arc<LlmHold>>) -> Self {
        self.llm_hold = hold;
        self
    }

    /// Escalate (`llm_unavailable`) instead of handing back a lease whose
    /// brain endpoint is down, so a run ends even during an outage.
    pub fn with_llm_outage_escalating(mut self, escalates: bool) -> Self {
        self.llm_outage_escalates = escalates;
        self
    }

    /// Runs one slot per workbench until `shutdown` fires or the lease quota
    /// is spent. In-flight leases are completed or handed back first.
    pub async fn run(self, benches: Vec<Workbench>) -> RunSummary {
        let runner = Arc::new(self);
        let slots: Vec<_> = benches
            .into_iter()
            .enumerate()
            .map(|(slot, bench)| {
                let span = tracing::info_span!("slot", slot, agent = %runner.agent);
                spawn("slot", runner.clone().slot(bench).instrument(span))
            })
            .collect();
        for handle in slots {
            if let Err(e) = handle.await {
                error!(error = %e, "slot task failed");
            }
        }
        RunSummary {
            completed: runner.quota.completed(),
        }
    }

    async fn slot(self: Arc<Self>, bench: Workbench) {
        // DESIGN T3: no baseline, no work.
        if let Err(e) = bench.target.baseline().await {
            error!(error = %e, "target has no baseline; slot not started");
            return;
        }
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            if let Some(hold) = &self.llm_hold {
                if !hold.until_up().await {
                    return;
                }
            }
            match self.quota.take() {
                Ticket::Exhausted => {
                    info!(completed = self.quota.completed(), "lease quota reached");
                    return;
                }
                Ticket::Wait => {
                    self.pause(self.client.settings().idle_poll()).await;
                    continue;
                }
                Ticket::Granted => {}
            }
            // Not raced against shutdown: dropping a granted lease unseen
            // would cost the task a lease loss. The call is bounded by the
            // connection's response timeout, and a grant that arrives after
            // shutdown is handed straight back.
            let sent = Instant::now();
            match self.client.lease(&self.agent).await {
                Ok(Some(lease)) => {
                    failures = 0;
                    let end = self.work_on(&bench, lease, sent).await;
                    self.quota.settle(matches!(end, LeaseEnd::Completed(_)));
                    // Without a hold to wait on, at least do not lease
                    // again at once from an endpoint that is down.
                    if end == LeaseEnd::Held && self.llm_hold.is_none() {
                        self.pause(MAX_ERROR_BACKOFF).await;
                    }
                }
                Ok(None) | Err(LeaseError::NotReady) => {
                    failures = 0;
                    self.quota.settle(false);
                    self.pause(with_jitter(self.client.settings().idle_poll()))
                        .await;
                }
                Err(e) => {
                    self.quota.settle(false);
                    failures = failures.saturating_add(1);
                    let wait = error_backoff(failures);
                    warn!(error = %e, failures, retry_in_ms = wait.as_millis() as u64, "lease call failed");
                    self.pause(wait).await;
                }
            }
        }
    }

    /// Sleeps unless shutdown comes first.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }
}

/// Up to +25 %, so idle agents do not poll Redis in lockstep.
fn with_jitter(d: Duration) -> Duration {
    let r = RandomState::new().hash_one(Instant::now());
    d + d.mul_f64((r % 1000) as f64 / 4000.0)
}

fn error_backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.min(5));
    Duration::from_millis(ms).min(MAX_ERROR_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_up_to_its_cap() {
        assert_eq!(error_backoff(1), Duration::from_millis(200));
        assert_eq!(error_backoff(2), Duration::from_millis(400));
        assert_eq!(error_backoff(30), MAX_ERROR_BACKOFF);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let d = Duration::from_millis(100);
        for _ in 0..100 {
            let j = with_jitter(d);
            assert!(j >= d && j <= d + d / 4, "{j:?}");
        }
    }
}
