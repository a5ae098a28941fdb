//! Host jobs (DESIGN H3–H5): a task that applies a [`Bundle`] to a whole
//! machine instead of remediating one rule. They travel in a
//! [`RuleTask`](crate::RuleTask)'s `job` and are leased, fenced, renewed
//! and completed exactly like rule tasks.
//!
//! - **compose**: on the agent's own fresh baseline target: scan the whole
//!   profile, apply every section in order with health checks after each,
//!   scan again; find interference (H3).
//! - **harden**: on one inventory host through the SSH sandbox: scan, apply
//!   only the sections whose rules fail there, scan again (H4, H5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;

/// What a host task does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostJob {
    Compose {
        bundle: Bundle,
    },
    Harden {
        bundle: Bundle,
        host: Box<InventoryHost>,
        /// Scan and report what would be applied; change nothing.
        #[serde(default)]
        check_only: bool,
    },
}

impl HostJob {
    pub fn bundle(&self) -> &Bundle {
        match self {
            Self::Compose { bundle } | Self::Harden { bundle, .. } => bundle,
        }
    }

    /// `compose` or `harden`: the run kind it belongs to.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Compose { .. } => "compose",
            Self::Harden { .. } => "harden",
        }
    }
}

/// One host of an inventory, as an agent needs it to reach the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryHost {
    /// Unique within the inventory; `[A-Za-z0-9._-]{1,64}`.
    pub name: String,
    /// Address as the sandbox resolves it.
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key path, readable on the agent's host.
    pub key: String,
    /// The pinned host key (`ssh-ed25519 AAAA…`); checked strictly (T6).
    pub host_key: String,
    /// Docker network the SSH sandbox joins to reach the host.
    pub network: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Run on the agent's host before anything changes (operator config,
    /// never a worker script), e.g. `virsh snapshot-create-as vm pre`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Vec<String>>,
    /// Run on the agent's host after a health failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<Vec<String>>,
}

impl InventoryHost {
    /// The known_hosts line pinning this host's key.
    pub fn known_hosts_line(&self) -> String {
        let entry = if self.port == 22 {
            self.address.clone()
        } else {
            format!("[{}]:{}", self.address, self.port)
        };
        format!("{entry} {}\n", self.host_key.trim())
    }
}

/// One section as applied to a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionResult {
    pub rule: String,
    /// `None`: killed at its timeout, or the exec failed.
    pub exit_code: Option<i32>,
    /// Health checks that failed right after the section.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_failed: Vec<String>,
    /// Whether the section's rule passed right after it (compose only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    pub duration_ms: u64,
}

/// A rule that passed right after its own section but fails after the whole
/// bundle (H3), and the later section after which it first failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interference {
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_by: Option<String>,
}

/// What a host task found and did; the body of a `host_reported` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// Profile rules passing before (short ids, sorted).
    pub passing_before: Vec<String>,
    /// Profile rules passing after; equal to `passing_before` with
    /// `check_only` or when the host was stopped before its after-scan.
    pub passing_after: Vec<String>,
    /// Profile rules failing after (short ids, sorted).
    pub failing_after: Vec<String>,
    /// Sections applied, in order.
    pub sections: Vec<SectionResult>,
    /// Bundle rules already passing before, whose sections were skipped.
    pub skipped_passing: Vec<String>,
    /// With `check_only`: the sections that would have been applied.
    pub would_apply: Vec<String>,
    pub interference: Vec<Interference>,
    /// The section after which health failed; the host stopped there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_failed: Option<String>,
    /// `Some(true)` reverted, `Some(false)` the revert failed, `None`: no
    /// revert was needed or none is configured (see `revert_configured`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<bool>,
    #[serde(default)]
    pub revert_configured: bool,
    #[serde(default)]
    pub check_only: bool,
    /// Wall time of each full-profile scan, ms, in order (before, after).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scan_ms: Vec<u64>,
    /// Where the before-scan's ARF was kept on the agent's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arf_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arf_after: Option<String>,
}

impl HostReport {
    /// Whether the host was reverted, in a word for tables.
    pub fn revert_state(&self) -> &'static str {
        match (self.reverted, self.revert_configured, &self.health_failed) {
            (Some(true), ..) => "yes",
            (Some(false), ..) => "revert failed",
            (None, false, Some(_)) => "no revert configured",
            _ => "-",
        }
    }

    /// Sections whose rules pass after (applied and verified).
    pub fn applied_passing(&self) -> usize {
        self.sections
            .iter()
            .filter(|s| self.passing_after.binary_search(&s.rule).is_ok())
            .count()
    }
}

/// Rollout control of a harden run, as operators know it from Ansible's
/// `serial` / `max_fail_percentage` and managed patching's rate control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Hosts worked on at once.
    pub concurrency: u32,
    /// The first `canary` hosts must all succeed before any other starts.
    pub canary: u32,
    /// No new host starts once more than this share of finished hosts
    /// failed; hosts in flight finish.
    pub max_fail_percent: u32,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            concurrency: 2,
            canary: 0,
            max_fail_percent: 10,
        }
    }
}

/// `POST /api/v1/harden` (API token): roll `main`'s bundle out to hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitHarden {
    pub skill_pack: String,
    #[serde(default)]
    pub profile: Option<String>,
    pub hosts: Vec<InventoryHost>,
    #[serde(default)]
    pub check_only: bool,
    #[serde(default)]
    pub rollout: Rollout,
}

/// `POST /api/v1/bundle/check` (API token): check `main`'s bundle on a
/// fresh target (a compose run).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitCompose {
    pub skill_pack: String,
    #[serde(default)]
    pub profile: Option<String>,
}

/// The answer to a harden or compose submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRunSubmitted {
    pub run: crate::RunId,
    pub hosts: u64,
    pub skills: u64,
    pub main_commit: String,
}

/// Where one host of a host run stands (`GET /api/v1/runs/{id}/hosts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    pub host: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `pending` (released or held), `fixed`, `already_passing`, `escalated`.
    pub outcome: String,
    /// Why it escalated: `health`, `scanner_error`, `not_started`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Not yet released by the rollout controller.
    #[serde(default)]
    pub held: bool,
    /// Sections applied so far (progress while it runs).
    #[serde(default)]
    pub sections_done: u32,
    /// The accepted epoch's report, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<HostReport>,
}

/// `bundle: skills=K pass_before=B pass_after=A interference=I
/// health_failed=H`: a composition check's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleCheck {
    /// The compose run.
    pub run: crate::RunId,
    pub skills: u64,
    pub pass_before: u64,
    pub pass_after: u64,
    pub interference: u64,
    pub health_failed: u64,
}

impl BundleCheck {
    pub fn of(run: crate::RunId, skills: u64, report: &HostReport) -> Self {
        Self {
            run,
            skills,
            pass_before: report.passing_before.len() as u64,
            pass_after: report.passing_after.len() as u64,
            interference: report.interference.len() as u64,
            health_failed: report
                .sections
                .iter()
                .filter(|s| !s.health_failed.is_empty())
                .count() as u64,
        }
    }

    /// The figure line `make fleet` and `status` print.
    pub fn line(&self) -> String {
        format!(
            "bundle: skills={} pass_before={} pass_after={} interference={} health_failed={}",
            self.skills, self.pass_before, self.pass_after, self.interference, self.health_failed
        )
    }
}
