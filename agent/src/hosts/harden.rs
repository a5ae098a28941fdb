//! Hardening one inventory host (DESIGN H4, H5) through the SSH sandbox
//! (T1): snapshot if configured, health, scan before (ARF kept), then only
//! the sections whose rules fail there, each followed by the health
//! checks, then scan after. A lost lease is resumed by the next holder
//! from a fresh scan, so a passing rule never gets its section again.

use std::time::Duration;

use fleet_common::bundle::Bundle;
use fleet_common::host::{HostReport, InventoryHost};
use fleet_common::RuleTask;
use fleet_targets::run_operator_command;
use tracing::{info, warn};

use super::access::HostAccess;
use super::apply::{apply, report as emit_section, Applied};
use super::scan::{scan, Scan};
use super::HostEnd;
use crate::events::LeaseEvents;
use crate::heartbeat::LeaseFence;
use crate::remediation::health_check;
use crate::workbench::Target;

/// Longest run of an operator's snapshot or revert command.
const OPERATOR_TIMEOUT: Duration = Duration::from_secs(600);

pub struct HardenJob<'a> {
    pub task: &'a RuleTask,
    pub bundle: &'a Bundle,
    pub host: &'a InventoryHost,
    pub check_only: bool,
    pub epoch: u64,
}

pub async fn harden(
    job: &HardenJob<'_>,
    access: &HostAccess,
    fence: &LeaseFence,
    events: &LeaseEvents,
) -> HostEnd {
    let machine = match access.connect(job.task, job.host).await {
        Ok(m) => m,
        Err(e) => {
            warn!(host = %job.host.name, error = %e, "host unreachable");
            return HostEnd::Unreachable(e.to_string());
        }
    };
    let target = crate::scap::MachineTarget(machine.clone());
    let end = run(job, access, &target, fence, events).await;
    if let Err(e) = machine.remove().await {
        warn!(error = %e, "removing the host's sandbox failed; the next start cleans it up");
    }
    end
}

async fn run(
    job: &HardenJob<'_>,
    access: &HostAccess,
    target: &dyn Target,
    fence: &LeaseFence,
    events: &LeaseEvents,
) -> HostEnd {
    let (host, checks) = (job.host, &job.task.checks);
    let mut report = HostReport {
        check_only: job.check_only,
        revert_configured: host.revert.is_some(),
        ..HostReport::default()
    };
    if let (Some(argv), false) = (&host.snapshot, job.check_only) {
        if let Err(e) = run_operator_command(argv, OPERATOR_TIMEOUT).await {
            warn!(host = %host.name, error = %e, "snapshot failed; nothing applied");
            report.health_failed = Some(format!("snapshot: {e}"));
            return HostEnd::Reported(Box::new(report));
        }
    }
    let health = health_check(target, &checks.health).await;
    if !health.ok() {
        warn!(host = %host.name, failed = ?health.failed, "host unhealthy before anything ran; nothing applied");
        report.health_failed = Some(format!("before: {}", health.failed.join(",")));
        return HostEnd::Reported(Box::new(report));
    }
    let Some((before, arf)) = kept_scan(job, access, target, "before", &mut report).await else {
        return HostEnd::ScannerError;
    };
    report.arf_before = Some(arf);
    report.passing_before = before.passing();
    report.skipped_passing = job
        .bundle
        .sections
        .iter()
        .filter(|s| before.passes(&s.rule))
        .map(|s| s.rule.clone())
        .collect();
    let due: Vec<_> = job
        .bundle
        .sections
        .iter()
        .filter(|s| before.fails(&s.rule))
        .collect();
    if job.check_only {
        report.would_apply = due.iter().map(|s| s.rule.clone()).collect();
        report.passing_after = report.passing_before.clone();
        report.failing_after = before.failing();
        info!(host = %host.name, would_apply = report.would_apply.len(), "check only: nothing changed");
        return HostEnd::Reported(Box::new(report));
    }
    for section in due {
        let result = match apply(target, section, &checks.health, fence).await {
            Applied::Done(r) => r,
            Applied::Lost(reason) => return HostEnd::Lost(reason),
        };
        emit_section(events, &result);
        let broke = !result.health_failed.is_empty();
        report.sections.push(result);
        if broke {
            report.health_failed = Some(section.rule.clone());
            report.reverted = match &host.revert {
                Some(argv) => {
                    let reverted = run_operator_command(argv, OPERATOR_TIMEOUT).await;
                    if let Err(e) = &reverted {
                        warn!(host = %host.name, error = %e, "revert failed");
                    }
                    Some(reverted.is_ok())
                }
                None => {
                    warn!(host = %host.name, section = %section.rule, "health failed and the host has no revert command: it is left as it is");
                    None
                }
            };
            report.passing_after = report.passing_before.clone();
            return HostEnd::Reported(Box::new(report));
        }
    }
    let Some((after, arf)) = kept_scan(job, access, target, "after", &mut report).await else {
        return HostEnd::ScannerError;
    };
    report.arf_after = Some(arf);
    report.passing_after = after.passing();
    report.failing_after = after.failing();
    info!(
        host = %host.name,
        applied = report.sections.len(),
        pass_before = report.passing_before.len(),
        pass_after = report.passing_after.len(),
        "host hardened"
    );
    HostEnd::Reported(Box::new(report))
}

/// A full-profile scan whose ARF is kept on the agent's host as
/// `<phase>-e<epoch>.arf.xml`; its time goes into the report. `None`
/// (logged) when oscap failed.
async fn kept_scan(
    job: &HardenJob<'_>,
    access: &HostAccess,
    target: &dyn Target,
    phase: &str,
    report: &mut HostReport,
) -> Option<(Scan, String)> {
    let name = format!("{phase}-e{}", job.epoch);
    let path = access.arf_path(job.task, &job.host.name, &name);
    let started = std::time::Instant::now();
    match scan(
        target,
        &job.task.checks,
        &job.bundle.profile,
        None,
        Some(&path),
    )
    .await
    {
        Ok(s) => {
            report
                .scan_ms
                .push(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            Some((s, path.display().to_string()))
        }
        Err(e) => {
            warn!(host = %job.host.name, phase, error = %e, "full-profile scan failed");
            None
        }
    }
}
