//! A simulated target and its evaluator. The "machine" is a map in memory
//! (rule → fix attempt applied); nothing runs on the host (DESIGN T1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_common::event::EvalStatus;
use fleet_common::RuleTask;

use super::plan::{behaviour, SimBehaviour};
use crate::error::AgentError;
use crate::workbench::{BoxFuture, Evaluation, Evaluator, ExecResult, Target};

const RULE_LINE: &str = "# sim-rule: ";
const ATTEMPT_LINE: &str = "# sim-attempt: ";

/// The script the sim brain writes; the sim target reads the two marker
/// lines back to know which fix was applied.
pub fn script_for(rule: &str, attempt: u32) -> String {
    format!("#!/bin/sh\n{RULE_LINE}{rule}\n{ATTEMPT_LINE}{attempt}\necho 'simulated fix {attempt} for {rule}'\n")
}

fn parse_script(script: &str) -> Option<(String, u32)> {
    let mut rule = None;
    let mut attempt = None;
    for line in script.lines() {
        if let Some(r) = line.strip_prefix(RULE_LINE) {
            rule = Some(r.trim().to_owned());
        } else if let Some(a) = line.strip_prefix(ATTEMPT_LINE) {
            attempt = a.trim().parse().ok();
        }
    }
    Some((rule?, attempt?))
}

#[derive(Debug, Default)]
struct MachineState {
    has_baseline: bool,
    /// Rule → the fix attempt whose script was applied since the baseline.
    applied: HashMap<String, u32>,
}

/// Shared by one slot's target and evaluator, as a real target's disk is.
#[derive(Debug, Clone, Default)]
pub struct SimMachine {
    state: Arc<Mutex<MachineState>>,
}

impl SimMachine {
    /// The fix attempt applied for `rule` since the last revert, if any.
    pub fn applied(&self, rule: &str) -> Option<u32> {
        self.state
            .lock()
            .expect("sim machine lock")
            .applied
            .get(rule)
            .copied()
    }
}

/// Executes sim scripts by recording them; each exec costs half the
/// per-attempt work time.
#[derive(Debug, Clone)]
pub struct SimTarget {
    pub machine: SimMachine,
    pub work: Duration,
}

impl Target for SimTarget {
    fn baseline(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            let mut st = self.machine.state.lock().expect("sim machine lock");
            st.has_baseline = true;
            st.applied.clear();
            Ok(())
        })
    }

    fn exec<'a>(
        &'a self,
        script: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResult, AgentError>> {
        Box::pin(async move {
            let cost = self.work / 2;
            if cost > timeout {
                tokio::time::sleep(timeout).await;
                return Ok(ExecResult {
                    exit_code: None,
                    output: String::new(),
                    timed_out: true,
                    contained: Some(format!("timed out after {} s", timeout.as_secs())),
                });
            }
            tokio::time::sleep(cost).await;
            let Some((rule, attempt)) = parse_script(script) else {
                return Ok(ExecResult {
                    exit_code: Some(127),
                    output: "sim: not a sim script".into(),
                    timed_out: false,
                    contained: None,
                });
            };
            let output = format!("simulated fix {attempt} for {rule}\n");
            self.machine
                .state
                .lock()
                .expect("sim machine lock")
                .applied
                .insert(rule, attempt);
            Ok(ExecResult {
                exit_code: Some(0),
                output,
                timed_out: false,
                contained: None,
            })
        })
    }

    fn revert(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            let mut st = self.machine.state.lock().expect("sim machine lock");
            if !st.has_baseline {
                // DESIGN T3: no baseline, nothing safe to return to.
                return Err(AgentError::Target("no baseline to revert to".into()));
            }
            st.applied.clear();
            Ok(())
        })
    }

    fn health(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

/// Judges a rule from its [`SimBehaviour`] and the fix applied on the
/// machine; each evaluation costs half the per-attempt work time.
#[derive(Debug, Clone)]
pub struct SimEvaluator {
    pub machine: SimMachine,
    pub work: Duration,
}

impl Evaluator for SimEvaluator {
    fn evaluate<'a>(&'a self, task: &'a RuleTask) -> BoxFuture<'a, Result<Evaluation, AgentError>> {
        Box::pin(async move {
            tokio::time::sleep(self.work / 2).await;
            let applied = self.machine.applied(&task.rule);
            let pass = match behaviour(&task.rule) {
                SimBehaviour::AlreadyPassing => true,
                SimBehaviour::FixedOnAttempt(n) => applied == Some(n),
                SimBehaviour::NeverFixable => false,
            };
            Ok(if pass {
                Evaluation {
                    status: EvalStatus::Pass,
                    details: String::new(),
                }
            } else {
                Evaluation {
                    status: EvalStatus::Fail,
                    details: format!(
                        "sim: rule {} still fails (applied fix: {applied:?})",
                        task.rule
                    ),
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_round_trip_through_their_markers() {
        let s = script_for("audit_rules_immutable", 2);
        assert_eq!(parse_script(&s), Some(("audit_rules_immutable".into(), 2)));
        assert_eq!(parse_script("echo hi"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn revert_returns_to_baseline_and_needs_one() {
        let machine = SimMachine::default();
        let target = SimTarget {
            machine: machine.clone(),
            work: Duration::from_millis(10),
        };
        assert!(
            target.revert().await.is_err(),
            "revert without a baseline must fail"
        );
        target.baseline().await.unwrap();
        let r = target
            .exec(&script_for("r1", 1), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(machine.applied("r1"), Some(1));
        target.revert().await.unwrap();
        assert_eq!(machine.applied("r1"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn exec_past_its_timeout_is_reported_and_not_applied() {
        let machine = SimMachine::default();
        let target = SimTarget {
            machine: machine.clone(),
            work: Duration::from_millis(400),
        };
        let r = target
            .exec(&script_for("r1", 1), Duration::from_millis(50))
            .await
            .unwrap();
        assert!(r.timed_out);
        assert_eq!(machine.applied("r1"), None);
    }
}
