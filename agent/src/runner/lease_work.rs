//! One lease from grant to end. It ends in exactly one way:
//!
//! - **completed**: the loop finished → flush events → `complete()` with the
//!   `TaskCompleted` event (accepted or rejected by Redis, DESIGN L3);
//! - **lost** (DESIGN L4): the heartbeat gave up, or the lease fence
//!   refused a write to the target → cancel, revert, emit `LeaseAbandoned`,
//!   never complete;
//! - **released**: shutdown → cancel, revert, `release()`, emit
//!   `LeaseReleased`;
//! - **held**: the brain's endpoint is down → the LLM hold starts (no slot
//!   leases until it answers), then as released: the task goes back to the
//!   queue without an outcome and without counting a lease loss (L5).
//!
//! The heartbeat runs until the lease ends either way.
//!
//! With a knowledge repo (K3), the lease works in its own worktree: created
//! after the grant, pushed with the attempts and result **before**
//! `complete()` (an accepted outcome always has its branch), and removed
//! without a push when the lease is lost or handed back. A git failure is
//! logged and counted, never fatal to the lease.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use backon::Retryable;
use fleet_common::event::{AbandonReason, EventBody};
use fleet_common::lease::{Completion, Lease};
use fleet_common::{EscalationReason, Outcome, RuleTask, TargetClass};
use fleet_knowledge::LeaseWorktree;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use super::Runner;
use crate::events::LeaseEvents;
use crate::heartbeat::{Heartbeat, LeaseFence};
use crate::hosts;
use crate::knowledge::{self, LeaseOrigin};
use crate::metrics::LeaseResult;
use crate::remediation::{remediate_fenced, Guidance, LeaseLog, LeaseRecord, Remediation, Skill};
use crate::workbench::Workbench;

/// After shutdown, how long a completion in progress may still take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Tries of a release before leaving the lease to expire.
const RELEASE_TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    Completed(Completion),
    Lost(AbandonReason),
    Released,
    /// Handed back because the brain's endpoint is down (released, or
    /// left to expire if the release failed).
    Held,
    /// Neither completed nor handed back (Redis unreachable, or shutdown
    /// cut a completion short); Redis reclaims the lease when it expires.
    Dropped,
}

enum Ended {
    Finished {
        outcome: Outcome,
        attempts: u32,
    },
    Lost(AbandonReason),
    Shutdown,
    /// The brain's endpoint is down.
    LlmDown,
}

/// Why a lease is handed back, for its log line.
#[derive(Clone, Copy)]
enum HandBack {
    Shutdown,
    LlmDown,
}

impl HandBack {
    fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::LlmDown => "llm_down",
        }
    }
}

impl Runner {
    pub(super) async fn work_on(&self, bench: &Workbench, lease: Lease, sent: Instant) -> LeaseEnd {
        let span = tracing::info_span!(
            "lease",
            run = %lease.task.run,
            task = %lease.task.task,
            rule = %lease.task.rule,
            agent = %lease.agent,
            epoch = %lease.epoch,
        );
        async {
            self.metrics.lease_active.inc();
            let end = self.hold(bench, &lease, sent).await;
            self.metrics.lease_active.dec();
            end
        }
        .instrument(span)
        .await
    }

    async fn hold(&self, bench: &Workbench, lease: &Lease, sent: Instant) -> LeaseEnd {
        info!(redis_deadline_ms = lease.deadline_ms, "lease acquired");
        let events = self.sink.for_lease(lease);
        events.emit(
            0,
            EventBody::LeaseAcquired {
                deadline_ms: lease.deadline_ms,
            },
        );
        let heartbeat = Heartbeat::start(
            self.client.clone(),
            lease.clone(),
            *self.client.settings(),
            sent,
        );
        let started = Instant::now();
        // Host tasks apply a bundle read from `main` at submission; they
        // need no worktree of their own.
        let worktree = match lease.task.job {
            None => self.open_worktree(lease).await,
            Some(_) => None,
        };
        let (worktree, guidance, skill) = match worktree {
            Some((wt, main)) => {
                let guidance = Guidance::select(&lease.task, &main.ranking, main.lessons);
                // Replayed before the brain is asked (DESIGN H1).
                let skill = main.skill.and_then(Skill::from_fetched);
                (Some(wt), guidance, skill)
            }
            None => (None, Guidance::default(), None),
        };
        let log = LeaseLog::default();
        // Checked before every write to the target: after a pause past the
        // TTL this future may run before the heartbeat task notices (L4).
        let fence = heartbeat.fence();
        let cancel = CancellationToken::new();
        let ended = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Ended::Shutdown,
            reason = heartbeat.lost() => Ended::Lost(reason),
            r = self.work(bench, lease, &events, &cancel, &guidance, skill.as_ref(), &log, &fence) => match r {
                Remediation::Finished { outcome, attempts } => Ended::Finished { outcome, attempts },
                Remediation::Cancelled => Ended::Shutdown,
                Remediation::Lost(reason) => Ended::Lost(reason),
                Remediation::Held { attempts } if self.llm_outage_escalates => {
                    // `--llm-hold false`: the run goes on without the
                    // endpoint; the outcome is not comparable (DESIGN D6).
                    if let Err(e) = bench.target.revert().await {
                        error!(error = %e, "revert after the brain's endpoint failed");
                    }
                    Ended::Finished {
                        outcome: Outcome::Escalated {
                            reason: EscalationReason::LlmUnavailable,
                        },
                        attempts,
                    }
                }
                Remediation::Held { .. } => Ended::LlmDown,
            },
        };
        cancel.cancel();
        match ended {
            Ended::Finished { outcome, attempts } => {
                let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                if let Some(wt) = worktree {
                    self.publish(wt, lease, outcome, attempts, log.take()).await;
                }
                let end = self
                    .complete(bench, &events, heartbeat, outcome, attempts, duration_ms)
                    .await;
                // A fix stays on the target for the Evaluator; the next
                // lease must start from the baseline again (DESIGN T3).
                if matches!(outcome, Outcome::Fixed { .. }) {
                    if let Err(e) = bench.target.revert().await {
                        error!(error = %e, "revert after a fix failed");
                    }
                }
                end
            }
            Ended::Lost(reason) => {
                heartbeat.stop().await;
                self.discard(worktree).await;
                self.abandon(bench, &events, reason).await
            }
            Ended::Shutdown => {
                self.discard(worktree).await;
                self.hand_back(bench, &events, heartbeat, HandBack::Shutdown)
                    .await
            }
            Ended::LlmDown => {
                // Every slot stops leasing now, not after this revert.
                if let Some(hold) = &self.llm_hold {
                    hold.enter("a brain request failed after its retries");
                }
                self.discard(worktree).await;
                match self
                    .hand_back(bench, &events, heartbeat, HandBack::LlmDown)
                    .await
                {
                    LeaseEnd::Released | LeaseEnd::Dropped => LeaseEnd::Held,
                    other => other,
                }
            }
        }
    }

    /// The lease's work: a host task's job, or the rule's remediation.
    #[allow(clippy::too_many_arguments)]
    async fn work(
        &self,
        bench: &Workbench,
        lease: &Lease,
        events: &LeaseEvents,
        cancel: &CancellationToken,
        guidance: &Guidance,
        skill: Option<&Skill>,
        log: &LeaseLog,
        fence: &LeaseFence,
    ) -> Remediation {
        let task = fitted(&lease.task, self.client.target_class());
        let task = task.as_ref();
        match &task.job {
            Some(job) => {
                let access = self.host_access.as_ref();
                hosts::work(task, job, bench, access, fence, events, &self.metrics).await
            }
            None => {
                remediate_fenced(
                    task,
                    bench,
                    events,
                    &self.metrics,
                    cancel,
                    guidance,
                    skill,
                    log,
                    fence,
                )
                .await
            }
        }
    }

    /// Fetch `main`, add this lease's worktree and read the family's
    /// lessons; `None` without a knowledge repo or when git failed (logged
    /// and counted): the lease then works without lessons.
    async fn open_worktree(
        &self,
        lease: &Lease,
    ) -> Option<(LeaseWorktree, knowledge::MainKnowledge)> {
        let knowledge = self.knowledge.as_ref()?;
        let run = lease.task.run.0.to_string();
        let (rule, family) = (lease.task.rule.clone(), lease.task.family.clone());
        // The coordinator serving the repo may be restarting: keep trying
        // for a while (the lease is renewed meanwhile), unless shutting down.
        let start = (|| knowledge.start_lease(run.clone(), rule.clone(), lease.epoch.0, family.clone()))
            .retry(knowledge.backoff())
            .notify(|e, after| warn!(error = %e, retry_in_ms = after.as_millis() as u64, "knowledge: could not start the lease's worktree; retrying"));
        let started = tokio::select! {
            r = start => r,
            _ = self.shutdown.cancelled() => return None,
        };
        match started {
            Ok((wt, main)) => {
                debug!(
                    branch = wt.branch(),
                    lessons_on_main = main.lessons.len(),
                    skill_on_main = main.skill.is_some(),
                    "lease worktree ready"
                );
                Some((wt, main))
            }
            Err(e) => {
                self.metrics.knowledge_errors.inc();
                error!(error = %e, "knowledge: could not start the lease's worktree; working without it");
                None
            }
        }
    }

    /// Write, commit and push the lease's branch, then remove the worktree.
    async fn publish(
        &self,
        wt: LeaseWorktree,
        lease: &Lease,
        outcome: Outcome,
        attempts: u32,
        record: LeaseRecord,
    ) {
        let branch = wt.branch().to_owned();
        let origin = LeaseOrigin {
            run: lease.task.run.0.to_string(),
            rule: lease.task.rule.clone(),
            agent: lease.agent.as_str().to_owned(),
        };
        let backoff = self
            .knowledge
            .as_ref()
            .map(knowledge::Knowledge::backoff)
            .unwrap_or_default();
        match knowledge::publish(wt, origin, outcome, attempts, record, backoff).await {
            Ok(()) => info!(branch, "knowledge: lease branch pushed"),
            Err(e) => {
                self.metrics.knowledge_errors.inc();
                error!(branch, error = %e, "knowledge: could not publish the lease's branch; completing anyway");
            }
        }
    }

    /// Lost or handed back: remove the worktree, push nothing.
    async fn discard(&self, wt: Option<LeaseWorktree>) {
        let Some(wt) = wt else { return };
        if let Err(e) = knowledge::discard(wt).await {
            self.metrics.knowledge_errors.inc();
            error!(error = %e, "knowledge: could not remove the lease's worktree");
        }
    }

    async fn complete(
        &self,
        bench: &Workbench,
        events: &LeaseEvents,
        heartbeat: Heartbeat,
        outcome: Outcome,
        attempts: u32,
        duration_ms: u64,
    ) -> LeaseEnd {
        // Every earlier event must be in the stream before the completion
        // takes the next seq, or a crash in between would leave a gap. The
        // heartbeat keeps the lease alive meanwhile.
        let flushed = tokio::select! {
            biased;
            reason = heartbeat.lost() => Err(reason),
            r = self.after_shutdown_grace(self.sink.flush()) => Ok(r),
        };
        // A lease past its local deadline is not ours to complete (L4).
        let flushed = match (flushed, heartbeat.must_stop()) {
            (Ok(_), Some(reason)) => Err(reason),
            (other, _) => other,
        };
        match flushed {
            Err(reason) => {
                heartbeat.stop().await;
                return self.abandon(bench, events, reason).await;
            }
            Ok(Some(Ok(()))) => {}
            Ok(_) => {
                heartbeat.stop().await;
                error!("events could not be flushed; lease left to expire");
                return LeaseEnd::Dropped;
            }
        }
        let body = EventBody::TaskCompleted {
            outcome,
            attempts,
            duration_ms,
        };
        let answer = self.after_shutdown_grace(events.complete(body)).await;
        heartbeat.stop().await;
        match answer {
            Some(Ok(c @ (Completion::Accepted | Completion::Duplicate))) => {
                info!(
                    outcome = outcome.kind(),
                    reason = outcome.reason().map(|r| r.as_str()),
                    attempts,
                    duration_ms,
                    "completion accepted"
                );
                self.metrics.lease_ended(LeaseResult::Accepted);
                self.metrics.outcome(&outcome);
                self.metrics
                    .rule_took(&outcome, duration_ms as f64 / 1000.0);
                LeaseEnd::Completed(c)
            }
            Some(Ok(c @ Completion::Rejected(why))) => {
                warn!(
                    reason = why.as_str(),
                    outcome = outcome.kind(),
                    "completion rejected"
                );
                self.metrics.lease_ended(LeaseResult::Rejected);
                LeaseEnd::Completed(c)
            }
            Some(Err(e)) => {
                error!(error = %e, "completion failed");
                LeaseEnd::Dropped
            }
            None => {
                error!("shutdown grace spent before the completion was answered");
                LeaseEnd::Dropped
            }
        }
    }

    /// DESIGN L4: stop, revert, discard; never complete.
    async fn abandon(
        &self,
        bench: &Workbench,
        events: &LeaseEvents,
        reason: AbandonReason,
    ) -> LeaseEnd {
        if let Err(e) = bench.target.revert().await {
            error!(error = %e, "revert after lease loss failed");
        }
        events.emit(0, EventBody::LeaseAbandoned { reason });
        warn!(?reason, "lease abandoned");
        self.metrics.lease_ended(LeaseResult::Lost);
        LeaseEnd::Lost(reason)
    }

    /// Shutdown or an LLM hold: revert while still renewing, then hand
    /// the task back (no outcome, no lease loss: DESIGN L5).
    async fn hand_back(
        &self,
        bench: &Workbench,
        events: &LeaseEvents,
        heartbeat: Heartbeat,
        why: HandBack,
    ) -> LeaseEnd {
        if let Err(e) = bench.target.revert().await {
            error!(error = %e, why = why.as_str(), "revert before the hand-back failed");
        }
        heartbeat.stop().await;
        for tried in 1..=RELEASE_TRIES {
            match self.client.release(events.lease()).await {
                Ok(true) => {
                    events.emit(0, EventBody::LeaseReleased);
                    info!(why = why.as_str(), "lease released");
                    self.metrics.lease_ended(LeaseResult::Released);
                    return LeaseEnd::Released;
                }
                Ok(false) => {
                    warn!(why = why.as_str(), "lease no longer held at release");
                    self.metrics.lease_ended(LeaseResult::Lost);
                    return LeaseEnd::Dropped;
                }
                Err(e) => {
                    warn!(error = %e, tried, "release failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(tried))).await;
                }
            }
        }
        LeaseEnd::Dropped
    }

    /// Runs `fut` to the end, unless shutdown fired and `SHUTDOWN_GRACE`
    /// passed since: then `None`.
    async fn after_shutdown_grace<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        let grace_spent = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = fut => Some(r),
            _ = grace_spent => None,
        }
    }
}

/// The task with only the health checks that fit targets of class `class`
/// (a pack's `targets = ["vm"]` checks need systemd and sshd, which a
/// container does not run); borrowed when every check fits.
fn fitted(task: &RuleTask, class: TargetClass) -> Cow<'_, RuleTask> {
    if task.checks.health.iter().all(|h| h.fits(class)) {
        return Cow::Borrowed(task);
    }
    let mut task = task.clone();
    task.checks.health = task.checks.health_for(class);
    Cow::Owned(task)
}
