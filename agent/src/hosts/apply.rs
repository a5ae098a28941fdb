//! One bundle section applied to a host: the same guards as any attempt's
//! script (the screen, the lease fence, the sandbox's limits and a
//! timeout), then the pack's health checks (DESIGN H3, H4, T1).

use std::time::Duration;

use fleet_common::bundle::BundleSection;
use fleet_common::event::{AbandonReason, EventBody};
use fleet_common::host::SectionResult;
use fleet_common::HealthCheck;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::events::LeaseEvents;
use crate::heartbeat::LeaseFence;
use crate::remediation::{health_check, screen};
use crate::workbench::Target;

/// Longest run of one section.
const SECTION_TIMEOUT: Duration = Duration::from_secs(300);

/// How one section went.
pub enum Applied {
    Done(SectionResult),
    /// The fence refused the write: the lease may be gone (L4).
    Lost(AbandonReason),
}

/// Applies `section` on `target` and checks health.
/// A script the screen refuses never runs and counts as failed (no exit
/// code); main's skills passed the same screen at promotion.
pub async fn apply(
    target: &dyn Target,
    section: &BundleSection,
    health: &[HealthCheck],
    fence: &LeaseFence,
) -> Applied {
    let started = Instant::now();
    let exit_code = match screen(&section.script) {
        Err(refusal) => {
            warn!(rule = %section.rule, %refusal, "section refused by the script screen");
            None
        }
        Ok(()) => {
            if let Err(reason) = fence.check() {
                warn!(?reason, rule = %section.rule, "lease fence: section not applied");
                return Applied::Lost(reason);
            }
            match target.exec(&section.script, SECTION_TIMEOUT).await {
                Ok(r) => r.exit_code.filter(|_| !r.timed_out),
                Err(e) => {
                    warn!(rule = %section.rule, error = %e, "section could not run");
                    None
                }
            }
        }
    };
    let health_failed = health_check(target, health).await.failed;
    let result = SectionResult {
        rule: section.rule.clone(),
        exit_code,
        health_failed,
        passed: None,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    info!(rule = %result.rule, exit_code = ?result.exit_code, health_failed = ?result.health_failed, ms = result.duration_ms, "section applied");
    Applied::Done(result)
}

/// Emits the section's progress event (after `passed` is known).
pub fn report(events: &LeaseEvents, section: &SectionResult) {
    events.emit(
        0,
        EventBody::SectionApplied {
            section: section.clone(),
        },
    );
}
