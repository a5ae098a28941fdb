//! The composition check (DESIGN H3): the whole bundle on the agent's own
//! fresh baseline target. Scan the profile, apply every section in order
//! with health checks after each, scan again. A rule that passed right
//! after its own section but fails at the end suffered interference; the
//! later section after which it first failed is named.

use std::collections::BTreeMap;

use fleet_common::bundle::Bundle;
use fleet_common::host::{HostReport, Interference};
use fleet_common::RuleTask;
use tracing::{info, warn};

use super::apply::{apply, report as emit_section, Applied};
use super::scan::scan;
use super::HostEnd;
use crate::events::LeaseEvents;
use crate::heartbeat::LeaseFence;
use crate::workbench::Target;

pub async fn compose(
    task: &RuleTask,
    bundle: &Bundle,
    target: &dyn Target,
    fence: &LeaseFence,
    events: &LeaseEvents,
) -> HostEnd {
    // A fresh baseline: an earlier lease's crash may have left changes.
    if let Err(e) = target.revert().await {
        warn!(error = %e, "compose: revert to baseline failed");
        return HostEnd::ScannerError;
    }
    let end = run(task, bundle, target, fence, events).await;
    // The next lease starts from the baseline again (T3).
    if let Err(e) = target.revert().await {
        warn!(error = %e, "compose: revert after the check failed");
    }
    end
}

async fn run(
    task: &RuleTask,
    bundle: &Bundle,
    target: &dyn Target,
    fence: &LeaseFence,
    events: &LeaseEvents,
) -> HostEnd {
    let (checks, profile) = (&task.checks, bundle.profile.as_str());
    let before = match scan(target, checks, profile, None, None).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "compose: scan before failed");
            return HostEnd::ScannerError;
        }
    };
    let mut report = HostReport {
        passing_before: before.passing(),
        ..HostReport::default()
    };
    // Rules that passed right after their own section, and the section
    // after which each first failed again.
    let mut holding: Vec<String> = Vec::new();
    let mut broken_by: BTreeMap<String, String> = BTreeMap::new();
    let mut applied = Vec::new();
    for section in &bundle.sections {
        let mut result = match apply(target, section, &checks.health, fence).await {
            Applied::Done(r) => r,
            Applied::Lost(reason) => return HostEnd::Lost(reason),
        };
        if !result.health_failed.is_empty() {
            // Take it out and carry on from a healthy target: back to the
            // baseline, then the sections that were fine so far.
            report
                .health_failed
                .get_or_insert_with(|| section.rule.clone());
            emit_section(events, &result);
            report.sections.push(result);
            if let Err(e) = target.revert().await {
                warn!(error = %e, "compose: revert after a health failure failed");
                return HostEnd::ScannerError;
            }
            for s in &applied {
                match apply(target, s, &[], fence).await {
                    Applied::Done(_) => {}
                    Applied::Lost(reason) => return HostEnd::Lost(reason),
                }
            }
            continue;
        }
        // One oscap run judges this section's rule and every rule that
        // held so far: the first to fail names this section.
        let mut rules = holding.clone();
        rules.push(section.rule.clone());
        let now = match scan(target, checks, profile, Some(&rules), None).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "compose: evaluation after a section failed");
                return HostEnd::ScannerError;
            }
        };
        holding.retain(|rule| {
            let still = now.passes(rule);
            if !still {
                broken_by
                    .entry(rule.clone())
                    .or_insert_with(|| section.rule.clone());
            }
            still
        });
        let passed = now.passes(&section.rule);
        if passed {
            holding.push(section.rule.clone());
        }
        result.passed = Some(passed);
        emit_section(events, &result);
        report.sections.push(result);
        applied.push(section.clone());
    }
    let after = match scan(target, checks, profile, None, None).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "compose: scan after failed");
            return HostEnd::ScannerError;
        }
    };
    report.passing_after = after.passing();
    report.failing_after = after.failing();
    report.interference = report
        .sections
        .iter()
        .filter(|s| s.passed == Some(true) && !after.passes(&s.rule))
        .map(|s| Interference {
            rule: s.rule.clone(),
            broken_by: broken_by.get(&s.rule).cloned(),
        })
        .collect();
    info!(
        skills = bundle.sections.len(),
        pass_before = report.passing_before.len(),
        pass_after = report.passing_after.len(),
        interference = report.interference.len(),
        health_failed = report.health_failed.is_some(),
        "composition checked"
    );
    HostEnd::Reported(Box::new(report))
}
