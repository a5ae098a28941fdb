//! Host tasks (DESIGN H3–H5): the composition check of a bundle on the
//! agent's own fresh target, and the hardening of one inventory host.
//! Leased, renewed, fenced and completed like rule tasks; they end with a
//! `host_reported` event holding the [`HostReport`] and an outcome:
//! `fixed` (sections applied), `already_passing` (nothing to apply, or
//! `--check`), `escalated/health` (a section broke health, or the host was
//! unreachable or unhealthy to begin with), `escalated/scanner_error`.

mod access;
mod apply;
mod compose;
mod harden;
mod scan;

use fleet_common::event::{AbandonReason, EventBody};
use fleet_common::host::{HostJob, HostReport};
use fleet_common::{EscalationReason, Outcome, RuleTask};

pub use access::HostAccess;
pub use scan::{scan, Scan};

use crate::events::LeaseEvents;
use crate::heartbeat::LeaseFence;
use crate::metrics::AgentMetrics;
use crate::remediation::Remediation;
use crate::workbench::Workbench;

/// How a host task's work ended, before it becomes an outcome.
pub enum HostEnd {
    Reported(Box<HostReport>),
    /// The host could not be reached over SSH.
    Unreachable(String),
    ScannerError,
    Lost(AbandonReason),
}

/// Works `job` for `task`; `access` is needed for harden jobs.
pub async fn work(
    task: &RuleTask,
    job: &HostJob,
    bench: &Workbench,
    access: Option<&HostAccess>,
    fence: &LeaseFence,
    events: &LeaseEvents,
    metrics: &AgentMetrics,
) -> Remediation {
    let end = match job {
        HostJob::Compose { bundle } => {
            compose::compose(task, bundle, bench.target.as_ref(), fence, events).await
        }
        HostJob::Harden {
            bundle,
            host,
            check_only,
        } => match access {
            None => HostEnd::Unreachable(
                "this agent has no Docker engine for SSH sandboxes (--target docker or ssh)".into(),
            ),
            Some(access) => {
                let job = harden::HardenJob {
                    task,
                    bundle,
                    host,
                    check_only: *check_only,
                    epoch: events.lease().epoch.0,
                };
                harden::harden(&job, access, fence, events).await
            }
        },
    };
    let outcome = match end {
        HostEnd::Lost(reason) => return Remediation::Lost(reason),
        HostEnd::ScannerError => Outcome::Escalated {
            reason: EscalationReason::ScannerError,
        },
        HostEnd::Unreachable(why) => {
            let report = HostReport {
                health_failed: Some(format!("unreachable: {why}")),
                ..HostReport::default()
            };
            emit_report(events, report);
            Outcome::Escalated {
                reason: EscalationReason::Health,
            }
        }
        HostEnd::Reported(report) => {
            let outcome = outcome_of(&report);
            emit_report(events, *report);
            outcome
        }
    };
    metrics.host_task(job.kind(), outcome.kind());
    Remediation::Finished {
        outcome,
        attempts: 1,
    }
}

fn outcome_of(report: &HostReport) -> Outcome {
    if report.health_failed.is_some() {
        Outcome::Escalated {
            reason: EscalationReason::Health,
        }
    } else if report.sections.is_empty() {
        Outcome::AlreadyPassing
    } else {
        Outcome::Fixed { attempt: 1 }
    }
}

fn emit_report(events: &LeaseEvents, report: HostReport) {
    events.emit(
        0,
        EventBody::HostReported {
            report: Box::new(report),
        },
    );
}
