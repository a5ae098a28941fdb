//! A script the target's sandbox had to stop (OOM kill, pid limit) is a
//! failed attempt, never evaluated (the check might well pass on what it
//! did before it was killed), and the reason reaches the
//! `attempt_evaluated` event and the next prompt (DESIGN T1).

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_agent::error::AgentError;
use fleet_agent::events::EventSink;
use fleet_agent::metrics::AgentMetrics;
use fleet_agent::remediation::{remediate, Remediation};
use fleet_agent::workbench::{
    BoxFuture, Brain, Evaluation, Evaluator, ExecResult, Prompt, Target, Workbench,
};
use fleet_common::event::{EvalStatus, EventBody};
use fleet_common::{AgentId, Budgets, Outcome, RuleTask};
use support::{rule_task, sample_lease};
use tokio_util::sync::CancellationToken;

const OOM: &str = "killed: out of memory (limit 512 MiB; 1 process killed)";

/// Answers `hog` first, then `fix`; keeps every prompt.
#[derive(Default)]
struct Worker {
    prompts: Mutex<Vec<String>>,
}

impl Brain for Worker {
    fn propose<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<String, AgentError>> {
        let mut prompts = self.prompts.lock().unwrap();
        prompts.push(prompt.text.clone());
        let script = if prompts.len() == 1 { "hog" } else { "fix" };
        Box::pin(async move { Ok(script.to_owned()) })
    }
}

/// `hog` is OOM-killed (exit 137); anything else exits 0.
#[derive(Default)]
struct Machine {
    execs: AtomicU32,
}

impl Target for Machine {
    fn baseline(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async { Ok(()) })
    }

    fn exec<'a>(
        &'a self,
        script: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResult, AgentError>> {
        self.execs.fetch_add(1, Ordering::SeqCst);
        let hog = script == "hog";
        Box::pin(async move {
            Ok(ExecResult {
                exit_code: Some(if hog { 137 } else { 0 }),
                output: if hog {
                    "Killed\n".into()
                } else {
                    String::new()
                },
                timed_out: false,
                contained: hog.then(|| OOM.to_owned()),
            })
        })
    }

    fn revert(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async { Ok(()) })
    }

    fn health(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

/// Fails before any script ran, passes on any later look (as it would on
/// what the hog did before it was killed).
#[derive(Default)]
struct Check {
    calls: AtomicU32,
}

impl Evaluator for Check {
    fn evaluate<'a>(
        &'a self,
        _task: &'a RuleTask,
    ) -> BoxFuture<'a, Result<Evaluation, AgentError>> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            Ok(Evaluation {
                status: if first {
                    EvalStatus::Fail
                } else {
                    EvalStatus::Pass
                },
                details: String::new(),
            })
        })
    }
}

#[tokio::test]
async fn a_script_the_sandbox_stopped_is_no_fix_and_the_next_prompt_says_why() {
    let worker = Arc::new(Worker::default());
    let check = Arc::new(Check::default());
    let bench = Workbench {
        brain: worker.clone(),
        target: Arc::new(Machine::default()),
        evaluator: check.clone(),
    };
    let task = rule_task(1, "package_cron_installed", Budgets::default());
    let (sink, mut rx) = EventSink::in_memory(AgentId::parse("agent-test").unwrap(), 1);
    let events = sink.for_lease(&sample_lease(task.clone()));
    let metrics = AgentMetrics::new();
    let r = remediate(&task, &bench, &events, &metrics, &CancellationToken::new()).await;
    sink.flush().await.unwrap();
    assert_eq!(
        r,
        Remediation::Finished {
            outcome: Outcome::Fixed { attempt: 2 },
            attempts: 2
        },
        "the check would have passed after the hog, yet attempt 1 is no fix"
    );
    let mut evaluated = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let EventBody::AttemptEvaluated {
            status, contained, ..
        } = e.body
        {
            evaluated.push((status, contained));
        }
    }
    assert_eq!(
        evaluated,
        vec![
            (EvalStatus::Error, Some(OOM.to_owned())),
            (EvalStatus::Pass, None)
        ]
    );
    assert_eq!(metrics.scripts_contained.get(), 1);
    // The first look and attempt 2's: the hog's attempt was not judged.
    assert_eq!(check.calls.load(Ordering::SeqCst), 2);
    let prompts = worker.prompts.lock().unwrap();
    assert!(
        prompts[1].contains(&format!("The target's sandbox stopped the script: {OOM}")),
        "{}",
        prompts[1]
    );
}
