//! Whole-profile scans on a host (DESIGN H3, H4): one `oscap xccdf eval
//! --profile P` on the target (never on the agent's host), optionally
//! narrowed to some rules, the ARF fetched, parsed, and kept when asked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fleet_common::event::EvalStatus;
use fleet_common::Checks;
use fleet_scap::Evaluation;

use crate::error::AgentError;
use crate::scap::map_status;
use crate::scap::shell::quote;
use crate::workbench::Target;

const RESULTS: &str = "/var/tmp/fleet-host-scan/arf.xml";
/// A whole profile on a slow guest takes minutes, not hours.
const SCAN_TIMEOUT: Duration = Duration::from_secs(900);
/// ARF embeds the datastream.
const MAX_ARF_BYTES: u64 = 256 * 1024 * 1024;

/// Each evaluated rule's status, by short rule id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan(pub BTreeMap<String, EvalStatus>);

impl Scan {
    pub fn passes(&self, rule: &str) -> bool {
        self.0.get(rule) == Some(&EvalStatus::Pass)
    }

    pub fn fails(&self, rule: &str) -> bool {
        self.0.get(rule) == Some(&EvalStatus::Fail)
    }

    /// Short ids of the passing rules, sorted.
    pub fn passing(&self) -> Vec<String> {
        self.with(|s| s == EvalStatus::Pass)
    }

    /// Short ids of the failing rules, sorted.
    pub fn failing(&self) -> Vec<String> {
        self.with(|s| s == EvalStatus::Fail)
    }

    fn with(&self, keep: impl Fn(EvalStatus) -> bool) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, s)| keep(**s))
            .map(|(r, _)| r.clone())
            .collect()
    }
}

/// Scans `profile` on `target` (only `rules` when given: one oscap run with
/// a `--rule` each). With `keep`, the ARF is written there on the agent's
/// host for the operator.
pub async fn scan(
    target: &dyn Target,
    checks: &Checks,
    profile: &str,
    rules: Option<&[String]>,
    keep: Option<&Path>,
) -> Result<Scan, AgentError> {
    let datastream = checks
        .datastream
        .as_deref()
        .ok_or_else(|| AgentError::Evaluator("the skill pack has no SCAP datastream".into()))?;
    let selection: String = rules
        .unwrap_or_default()
        .iter()
        .map(|r| format!(" --rule {}", quote(&checks.xccdf_rule_id(r))))
        .collect();
    // Exit 0: all pass, 2: some failed; anything else is oscap's error.
    let script = format!(
        "mkdir -p /var/tmp/fleet-host-scan && rm -f {arf} && oscap xccdf eval --skip-valid --profile {profile}{selection} --results-arf {arf} {ds} >/var/tmp/fleet-host-scan/log 2>&1; rc=$?; if [ $rc -ne 0 ] && [ $rc -ne 2 ]; then tail -c 2000 /var/tmp/fleet-host-scan/log; fi; exit $rc",
        arf = quote(RESULTS),
        profile = quote(profile),
        ds = quote(datastream),
    );
    let out = target.exec(&script, SCAN_TIMEOUT).await?;
    if out.timed_out || !matches!(out.exit_code, Some(0) | Some(2)) {
        return Err(AgentError::Evaluator(format!(
            "profile scan: oscap exited with {:?}{}: {}",
            out.exit_code,
            if out.timed_out { " (timed out)" } else { "" },
            out.output.trim()
        )));
    }
    let bytes = target.read_file(RESULTS, MAX_ARF_BYTES).await?;
    if let Some(path) = keep {
        let kept = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(path, &bytes));
        kept.map_err(|e| AgentError::Target(format!("keeping {}: {e}", path.display())))?;
    }
    let prefix = checks.rule_prefix.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        Evaluation::parse(&String::from_utf8_lossy(&bytes)).map(|e| {
            e.evaluated()
                .map(|r| {
                    let short = r.rule_id.strip_prefix(&prefix).unwrap_or(&r.rule_id);
                    (short.to_owned(), map_status(r.status))
                })
                .collect::<BTreeMap<_, _>>()
        })
    })
    .await
    .map_err(|e| AgentError::Evaluator(e.to_string()))?
    .map_err(|e| AgentError::Evaluator(format!("profile scan results: {e}")))?;
    Ok(Scan(parsed))
}
