//! The Evaluator (DESIGN T4): `oscap xccdf eval --profile P --rule R` on the
//! target, the ARF results fetched and parsed into a status plus the failing
//! check's details for the Reflector (the ARF only when the rule failed:
//! otherwise oscap's printed `Result` is the status). On a Docker target oscap reads a
//! one-rule datastream (`one_rule.rs`) built once per rule from the target's
//! own datastream: same verdict and details, a fraction of the time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_common::event::EvalStatus;
use fleet_common::RuleTask;
use fleet_scap::{Evaluation as ArfResults, RuleStatus};
use tracing::debug;

use super::machine::Machine;
use super::one_rule::one_rule_datastream;
use super::shell::quote;
use crate::error::AgentError;
use crate::workbench::{BoxFuture, Evaluation, Evaluator};

/// Where results are written on the target; one evaluation at a time per
/// target, and the next revert removes it.
const RESULTS_DIR: &str = "/var/tmp/fleet-eval";
/// One rule on a small machine takes seconds; a hung probe must not hold
/// the lease for its whole wall-time budget.
const EVAL_TIMEOUT: Duration = Duration::from_secs(180);
/// ARF embeds the datastream (6 MB for Debian 11, 22 MB for RHEL 9).
const MAX_ARF_BYTES: u64 = 128 * 1024 * 1024;
/// Failing-check details kept for the Reflector's prompt.
pub const MAX_DETAILS_BYTES: usize = 8 * 1024;

/// The one-rule datastream oscap reads on a Docker target; written before
/// each evaluation (a revert removes it, a script may have touched it).
const ONE_RULE_DS: &str = "/var/tmp/fleet-eval-ds.xml";
/// The source datastream read from the target once per evaluator.
const MAX_DS_BYTES: u64 = 64 * 1024 * 1024;

pub struct OscapEvaluator {
    machine: Arc<Machine>,
    /// Per source datastream path: its text and the one-rule datastreams
    /// built from it so far.
    content: Mutex<HashMap<String, Content>>,
}

#[derive(Default)]
struct Content {
    source: Option<Arc<String>>,
    rules: HashMap<String, Arc<String>>,
}

impl OscapEvaluator {
    pub fn new(machine: Arc<Machine>) -> Self {
        Self {
            machine,
            content: Mutex::new(HashMap::new()),
        }
    }

    /// The one-rule datastream of `rule`, built on first use.
    async fn one_rule(&self, datastream: &str, rule: &str) -> Result<Arc<String>, AgentError> {
        let source = {
            let content = self.content.lock().expect("content lock");
            if let Some(ds) = content.get(datastream).and_then(|c| c.rules.get(rule)) {
                return Ok(ds.clone());
            }
            content.get(datastream).and_then(|c| c.source.clone())
        };
        let source = match source {
            Some(source) => source,
            None => {
                let bytes = self
                    .machine
                    .read_file(datastream, MAX_DS_BYTES)
                    .await
                    .map_err(|e| AgentError::Evaluator(format!("fetching {datastream}: {e}")))?;
                let text = String::from_utf8(bytes)
                    .map_err(|e| AgentError::Evaluator(format!("{datastream}: {e}")))?;
                Arc::new(text)
            }
        };
        let (src, id) = (source.clone(), rule.to_owned());
        let built = tokio::task::spawn_blocking(move || one_rule_datastream(&src, &id))
            .await
            .map_err(|e| AgentError::Evaluator(e.to_string()))?
            .map_err(|e| AgentError::Evaluator(format!("{datastream}: {e}")))?;
        let built = Arc::new(built);
        let mut content = self.content.lock().expect("content lock");
        let entry = content.entry(datastream.to_owned()).or_default();
        entry.source = Some(source);
        entry.rules.insert(rule.to_owned(), built.clone());
        Ok(built)
    }

    async fn run(&self, task: &RuleTask) -> Result<Evaluation, AgentError> {
        let source = task.checks.datastream.as_deref().ok_or_else(|| {
            AgentError::Evaluator(format!(
                "skill pack {} has no SCAP datastream; it cannot run on a real target",
                task.skill_pack
            ))
        })?;
        let rule = task.checks.xccdf_rule_id(&task.rule);
        let datastream = match &*self.machine {
            Machine::Docker(target) => {
                let ds = self.one_rule(source, &rule).await?;
                target
                    .write_file(ONE_RULE_DS, ds.as_bytes())
                    .await
                    .map_err(|e| AgentError::Evaluator(format!("writing {ONE_RULE_DS}: {e}")))?;
                ONE_RULE_DS
            }
            _ => source,
        };
        let arf = format!("{RESULTS_DIR}/arf.xml");
        // Exit 0: all pass, 2: some failed; anything else is oscap's error.
        let script = format!(
            "mkdir -p {dir} && rm -f {arf} && oscap xccdf eval --skip-valid --profile {profile} --rule {rule} --results-arf {arf} {ds} >{dir}/log 2>&1; rc=$?; if [ $rc -ne 0 ] && [ $rc -ne 2 ]; then tail -c 2000 {dir}/log; else grep -m1 '^Result' {dir}/log; fi; exit $rc",
            dir = RESULTS_DIR,
            arf = quote(&arf),
            profile = quote(&task.profile),
            rule = quote(&rule),
            ds = quote(datastream),
        );
        let out = self
            .machine
            .exec(&script, EVAL_TIMEOUT)
            .await
            .map_err(|e| AgentError::Evaluator(e.to_string()))?;
        if out.timed_out {
            return Err(AgentError::Evaluator(format!(
                "oscap did not finish within {}s",
                EVAL_TIMEOUT.as_secs()
            )));
        }
        if !matches!(out.exit_code, Some(0) | Some(2)) {
            return Err(AgentError::Evaluator(format!(
                "oscap exited with {:?}: {}",
                out.exit_code,
                out.output.trim()
            )));
        }
        // oscap's own `Result` line; the ARF is fetched only for the
        // details of a failure (or when the line is not there).
        let printed = out
            .output
            .lines()
            .find_map(|l| l.strip_prefix("Result"))
            .and_then(|l| RuleStatus::from_xccdf(l.trim()));
        if let Some(status) = printed.filter(|s| !s.has_details()) {
            return Ok(Evaluation {
                status: map_status(status),
                details: String::new(),
            });
        }
        let bytes = self
            .machine
            .read_file(&arf, MAX_ARF_BYTES)
            .await
            .map_err(|e| AgentError::Evaluator(format!("fetching {arf}: {e}")))?;
        let started = std::time::Instant::now();
        // Parsing 6–22 MB of XML is CPU work; keep it off the runtime.
        let parsed = tokio::task::spawn_blocking(move || {
            let text = String::from_utf8_lossy(&bytes);
            ArfResults::parse(&text)
        })
        .await
        .map_err(|e| AgentError::Evaluator(e.to_string()))?
        .map_err(|e| AgentError::Evaluator(format!("results of {rule}: {e}")))?;
        debug!(
            parse_ms = started.elapsed().as_millis() as u64,
            "arf parsed"
        );
        let result = parsed.rule(&rule).ok_or_else(|| {
            AgentError::Evaluator(format!("the results hold no rule-result for {rule}"))
        })?;
        let details = if result.status.has_details() {
            result.details_text(MAX_DETAILS_BYTES)
        } else {
            String::new()
        };
        Ok(Evaluation {
            status: map_status(result.status),
            details,
        })
    }
}

/// XCCDF result → the loop's status. A rule oscap did not evaluate
/// (`notselected`: the profile does not select it) or could not judge is
/// an error: it can never be fixed by a script.
pub fn map_status(s: RuleStatus) -> EvalStatus {
    match s {
        RuleStatus::Pass | RuleStatus::Fixed => EvalStatus::Pass,
        RuleStatus::Fail => EvalStatus::Fail,
        RuleStatus::NotApplicable => EvalStatus::NotApplicable,
        RuleStatus::NotChecked => EvalStatus::NotChecked,
        RuleStatus::Informational => EvalStatus::Informational,
        RuleStatus::Error | RuleStatus::Unknown | RuleStatus::NotSelected => EvalStatus::Error,
    }
}

impl Evaluator for OscapEvaluator {
    fn evaluate<'a>(&'a self, task: &'a RuleTask) -> BoxFuture<'a, Result<Evaluation, AgentError>> {
        Box::pin(self.run(task))
    }
}
