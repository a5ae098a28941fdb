//! Keeps one lease alive from its own task and says when it is gone
//! (DESIGN L2, L4).
//!
//! Redis time alone decides expiry; the agent only measures, on its own
//! monotonic clock, how long ago it *sent* the last renewal that succeeded.
//! Once TTL minus the safety margin has passed since then, the lease may
//! already be gone by Redis time, so the agent stops early. Each renewal is
//! bounded by a timeout and raced against that deadline, so a hung Redis
//! call cannot keep the agent working past it.

use std::sync::{Arc, Mutex, OnceLock};

use fleet_common::event::AbandonReason;
use fleet_common::lease::{Lease, LeaseClient, Renewal};
use fleet_common::settings::LeaseSettings;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::spawn::spawn;

/// The renewal task of one lease.
pub struct Heartbeat {
    lost: CancellationToken,
    reason: Arc<OnceLock<AbandonReason>>,
    stop: CancellationToken,
    handle: Option<JoinHandle<()>>,
    /// The current local deadline, shared with the renewal task.
    deadline: Arc<Mutex<Instant>>,
}

impl Heartbeat {
    /// Starts renewing `lease`. `granted_sent_at` is when the lease call that
    /// granted it was sent: the first local deadline counts from there.
    pub fn start(
        client: LeaseClient,
        lease: Lease,
        settings: LeaseSettings,
        granted_sent_at: Instant,
    ) -> Self {
        let lost = CancellationToken::new();
        let reason = Arc::new(OnceLock::new());
        let stop = CancellationToken::new();
        let deadline = Arc::new(Mutex::new(granted_sent_at + settings.local_deadline()));
        let beat = Beat {
            client,
            lease,
            settings,
            lost: lost.clone(),
            reason: reason.clone(),
            stop: stop.clone(),
            deadline: deadline.clone(),
        };
        let handle = spawn("heartbeat", beat.run(granted_sent_at));
        Self {
            lost,
            reason,
            stop,
            handle: Some(handle),
            deadline,
        }
    }

    /// Fires when the lease is lost; see [`Heartbeat::reason`].
    pub fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Waits until the lease is lost and says why.
    pub async fn lost(&self) -> AbandonReason {
        self.lost.cancelled().await;
        self.reason()
            .expect("the lost token fires only after its reason is set")
    }

    pub fn reason(&self) -> Option<AbandonReason> {
        self.reason.get().copied()
    }

    /// Why the lease must be given up now, checked synchronously: the
    /// renewal task may not have run yet after a long pause (SIGSTOP), so
    /// callers about to act on the lease also look at the clock themselves.
    pub fn must_stop(&self) -> Option<AbandonReason> {
        self.reason().or_else(|| {
            let deadline = *self.deadline.lock().expect("heartbeat deadline lock");
            (Instant::now() >= deadline).then_some(AbandonReason::LocalDeadline)
        })
    }

    /// A cheap handle on this lease's local deadline, for code about to
    /// write to the target (DESIGN L4, T2).
    pub fn fence(&self) -> LeaseFence {
        LeaseFence {
            deadline: Some(self.deadline.clone()),
            reason: self.reason.clone(),
        }
    }

    /// Stops renewing and waits for the task to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

/// Checked right before every write to the target: after a pause (SIGSTOP
/// past the TTL, a stalled host) the remediation future can run before the
/// renewal task notices the lease is gone, and a zombie must not touch the
/// target then. The check reads the heartbeat's local deadline (TTL minus
/// the safety margin since the last renewal sent) and its verdict, so it
/// refuses as soon as the lease may be gone by Redis time. Cheap: two
/// `Arc`s, one lock, one clock read.
#[derive(Clone, Debug, Default)]
pub struct LeaseFence {
    /// `None`: unfenced (tests and tools that run without a lease).
    deadline: Option<Arc<Mutex<Instant>>>,
    reason: Arc<OnceLock<AbandonReason>>,
}

impl LeaseFence {
    /// A fence that never refuses: for code run without a lease.
    pub fn unfenced() -> Self {
        Self::default()
    }

    /// A fence on a fixed deadline (no renewals): for tests.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline: Some(Arc::new(Mutex::new(deadline))),
            reason: Arc::default(),
        }
    }

    /// `Ok` while the lease is still ours to act on; otherwise why not.
    pub fn check(&self) -> Result<(), AbandonReason> {
        if let Some(reason) = self.reason.get() {
            return Err(*reason);
        }
        let Some(deadline) = &self.deadline else {
            return Ok(());
        };
        let deadline = *deadline.lock().expect("heartbeat deadline lock");
        if Instant::now() >= deadline {
            Err(AbandonReason::LocalDeadline)
        } else {
            Ok(())
        }
    }
}

impl Drop for Heartbeat {
    /// A lease's holder that vanishes (its future dropped) must not leave
    /// the lease renewed forever.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Beat {
    client: LeaseClient,
    lease: Lease,
    settings: LeaseSettings,
    lost: CancellationToken,
    reason: Arc<OnceLock<AbandonReason>>,
    stop: CancellationToken,
    deadline: Arc<Mutex<Instant>>,
}

impl Beat {
    async fn run(self, granted_sent_at: Instant) {
        let every = self.settings.renew_every();
        let mut deadline = granted_sent_at + self.settings.local_deadline();
        let mut next = granted_sent_at + every;
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = sleep_until(deadline) => return self.fire(AbandonReason::LocalDeadline),
                _ = sleep_until(next) => {}
            }
            let sent = Instant::now();
            next = sent + every;
            // A renewal slower than one period is as good as failed; the
            // next tick tries again.
            let renewal = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = sleep_until(deadline) => return self.fire(AbandonReason::LocalDeadline),
                r = timeout(every, self.client.renew(&self.lease)) => r,
            };
            match renewal {
                Ok(Ok(Renewal::Renewed { deadline_ms })) => {
                    deadline = sent + self.settings.local_deadline();
                    *self.deadline.lock().expect("heartbeat deadline lock") = deadline;
                    debug!(redis_deadline_ms = deadline_ms, "lease renewed");
                }
                Ok(Ok(Renewal::Refused(why))) => {
                    info!(reason = why.as_str(), "lease renewal refused");
                    return self.fire(AbandonReason::RenewRefused);
                }
                Ok(Err(e)) => warn!(error = %e, "lease renewal failed, retrying next tick"),
                Err(_) => warn!(
                    timeout_ms = every.as_millis() as u64,
                    "lease renewal timed out, retrying next tick"
                ),
            }
        }
    }

    fn fire(&self, reason: AbandonReason) {
        let _ = self.reason.set(reason);
        warn!(?reason, "lease lost");
        self.lost.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fence_refuses_once_its_deadline_passed() {
        let fence = LeaseFence::until(Instant::now() + Duration::from_secs(5));
        assert_eq!(fence.check(), Ok(()));
        // A pause past the deadline (as after SIGSTOP / SIGCONT): the
        // renewal task never ran, the fence still refuses.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(fence.check(), Err(AbandonReason::LocalDeadline));
        assert_eq!(fence.clone().check(), Err(AbandonReason::LocalDeadline));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_follows_renewals_and_the_heartbeats_verdict() {
        let deadline = Arc::new(Mutex::new(Instant::now() + Duration::from_secs(1)));
        let reason = Arc::new(OnceLock::new());
        let fence = LeaseFence {
            deadline: Some(deadline.clone()),
            reason: reason.clone(),
        };
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(fence.check().is_err());
        // A renewal moves the deadline; the same fence lets writes through.
        *deadline.lock().unwrap() = Instant::now() + Duration::from_secs(1);
        assert_eq!(fence.check(), Ok(()));
        // A refused renewal stops writes at once, deadline or not.
        reason.set(AbandonReason::RenewRefused).unwrap();
        assert_eq!(fence.check(), Err(AbandonReason::RenewRefused));
    }

    #[test]
    fn an_unfenced_fence_never_refuses() {
        assert_eq!(LeaseFence::unfenced().check(), Ok(()));
    }
}
