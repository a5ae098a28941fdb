//! The per-rule loop on the sim workbench, with events captured in memory
//! and time paused (the sim's work is tokio sleeps).

mod support;

use std::time::Duration;

use fleet_agent::events::EventSink;
use fleet_agent::metrics::AgentMetrics;
use fleet_agent::remediation::{remediate, Remediation};
use fleet_agent::sim::{self, expected_outcome, SimBehaviour};
use fleet_common::event::{EvalStatus, Event, EventBody};
use fleet_common::{AgentId, Budgets, EscalationReason, Outcome, RuleTask};
use support::{rule_task, rule_with, sample_lease};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WORK: Duration = Duration::from_millis(50);

async fn run_rule(task: RuleTask, work: Duration) -> (Remediation, Vec<Event>) {
    let bench = sim::workbench(work);
    bench.target.baseline().await.unwrap();
    let (sink, rx) = EventSink::in_memory(AgentId::parse("agent-test").unwrap(), 1);
    let events = sink.for_lease(&sample_lease(task.clone()));
    let r = remediate(
        &task,
        &bench,
        &events,
        &AgentMetrics::new(),
        &CancellationToken::new(),
    )
    .await;
    sink.flush().await.unwrap();
    (r, drain(rx))
}

fn drain(mut rx: UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn sim_outcomes_are_deterministic_and_predicted() {
    let budgets = Budgets::default();
    for i in 0..200 {
        let rule = format!("xccdf_rule_{i}");
        let (r, _) = run_rule(rule_task(i + 1, &rule, budgets), WORK).await;
        let Remediation::Finished { outcome, .. } = r else {
            panic!("not cancelled")
        };
        assert_eq!(outcome, expected_outcome(&rule, &budgets), "rule {rule}");
        // Same rule, fresh machine: same outcome.
        let (again, _) = run_rule(rule_task(i + 1, &rule, budgets), WORK).await;
        assert_eq!(again, r, "rule {rule} is not deterministic");
    }
}

#[tokio::test(start_paused = true)]
async fn a_rule_fixed_on_attempt_three_emits_three_attempts_in_order() {
    let rule = rule_with(SimBehaviour::FixedOnAttempt(3));
    let (r, events) = run_rule(rule_task(7, &rule, Budgets::default()), WORK).await;
    assert_eq!(
        r,
        Remediation::Finished {
            outcome: Outcome::Fixed { attempt: 3 },
            attempts: 3
        }
    );

    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    for (i, chunk) in events.chunks(4).enumerate() {
        let attempt = i as u32 + 1;
        assert!(chunk.iter().all(|e| e.attempt == attempt && e.rule == rule));
        assert!(matches!(chunk[0].body, EventBody::AttemptStarted));
        match &chunk[1].body {
            EventBody::PromptAssembled {
                lessons,
                prompt_chars,
            } => {
                assert!(lessons.is_empty());
                assert!(*prompt_chars > 0);
            }
            other => panic!("expected prompt_assembled, got {other:?}"),
        }
        match &chunk[2].body {
            EventBody::ScriptProposed { script, .. } => {
                assert_eq!(*script, sim::script_for(&rule, attempt))
            }
            other => panic!("expected script_proposed, got {other:?}"),
        }
        let want = if attempt == 3 {
            EvalStatus::Pass
        } else {
            EvalStatus::Fail
        };
        match chunk[3].body {
            EventBody::AttemptEvaluated {
                status, health_ok, ..
            } => {
                assert_eq!(status, want);
                assert!(health_ok);
            }
            ref other => panic!("expected attempt_evaluated, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_passing_rule_needs_no_attempt() {
    let rule = rule_with(SimBehaviour::AlreadyPassing);
    let (r, events) = run_rule(rule_task(1, &rule, Budgets::default()), WORK).await;
    assert_eq!(
        r,
        Remediation::Finished {
            outcome: Outcome::AlreadyPassing,
            attempts: 0
        }
    );
    assert!(events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_attempt_budget_escalates_and_leaves_the_target_reverted() {
    let rule = rule_with(SimBehaviour::FixedOnAttempt(3));
    let budgets = Budgets {
        max_attempts: 2,
        ..Budgets::default()
    };
    let task = rule_task(1, &rule, budgets);
    let machine = sim::SimMachine::default();
    let bench = fleet_agent::workbench::Workbench {
        brain: std::sync::Arc::new(sim::SimBrain),
        target: std::sync::Arc::new(sim::SimTarget {
            machine: machine.clone(),
            work: WORK,
        }),
        evaluator: std::sync::Arc::new(sim::SimEvaluator {
            machine: machine.clone(),
            work: WORK,
        }),
    };
    bench.target.baseline().await.unwrap();
    let (sink, rx) = EventSink::in_memory(AgentId::parse("agent-test").unwrap(), 1);
    let events = sink.for_lease(&sample_lease(task.clone()));
    let r = remediate(
        &task,
        &bench,
        &events,
        &AgentMetrics::new(),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(
        r,
        Remediation::Finished {
            outcome: Outcome::Escalated {
                reason: EscalationReason::AttemptBudget
            },
            attempts: 2
        }
    );
    assert_eq!(machine.applied(&rule), None, "failed attempts are reverted");
    sink.flush().await.unwrap();
    assert_eq!(drain(rx).len(), 8);
}

#[tokio::test(start_paused = true)]
async fn the_time_budget_escalates_a_slow_rule() {
    let rule = rule_with(SimBehaviour::NeverFixable);
    let budgets = Budgets {
        max_attempts: 50,
        wall_time_s: 1,
    };
    let started = Instant::now();
    let (r, events) = run_rule(rule_task(1, &rule, budgets), Duration::from_millis(400)).await;
    let Remediation::Finished { outcome, attempts } = r else {
        panic!("not cancelled")
    };
    assert_eq!(
        outcome,
        Outcome::Escalated {
            reason: EscalationReason::TimeBudget
        }
    );
    assert!((1..=3).contains(&attempts), "attempts {attempts}");
    assert!(
        started.elapsed() <= Duration::from_millis(1100),
        "took {:?}",
        started.elapsed()
    );
    assert!(events.iter().all(|e| e.attempt <= attempts));
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_the_loop_promptly() {
    let rule = rule_with(SimBehaviour::NeverFixable);
    let task = rule_task(
        1,
        &rule,
        Budgets {
            max_attempts: 50,
            wall_time_s: 3600,
        },
    );
    let bench = sim::workbench(Duration::from_secs(10));
    bench.target.baseline().await.unwrap();
    let (sink, _rx) = EventSink::in_memory(AgentId::parse("agent-test").unwrap(), 1);
    let events = sink.for_lease(&sample_lease(task.clone()));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(12)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let r = remediate(&task, &bench, &events, &AgentMetrics::new(), &cancel).await;
    assert_eq!(r, Remediation::Cancelled);
    assert_eq!(started.elapsed(), Duration::from_secs(12));
}

#[tokio::test(start_paused = true)]
async fn a_failing_health_check_fails_the_attempt_and_names_the_check() {
    // The sim target runs only sim scripts: any other command exits 127, so
    // this pack health check fails after every attempt.
    let rule = rule_with(SimBehaviour::FixedOnAttempt(1));
    let mut task = rule_task(9, &rule, Budgets::default());
    task.checks.health = vec![fleet_common::HealthCheck {
        name: "sshd_config".into(),
        command: "sshd -t".into(),
        timeout_s: 5,
        targets: vec![],
    }];
    let (r, events) = run_rule(task, WORK).await;
    assert_eq!(
        r,
        Remediation::Finished {
            outcome: Outcome::Escalated {
                reason: EscalationReason::Health
            },
            attempts: 3
        },
        "a pass on an unhealthy target is never a fix"
    );
    let evaluated: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::AttemptEvaluated {
                status,
                health_ok,
                health_failed,
                ..
            } => Some((*status, *health_ok, health_failed.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(evaluated.len(), 3);
    assert_eq!(
        evaluated[0],
        (EvalStatus::Pass, false, vec!["sshd_config".to_string()])
    );
}

/// DESIGN L4, T2: past the lease's local deadline (as after a pause past
/// the TTL) the loop writes nothing more to the target and ends as lost;
/// scripts that did run say when they started.
#[tokio::test(start_paused = true)]
async fn the_lease_fence_stops_the_next_write_once_the_deadline_passed() {
    use fleet_agent::remediation::{remediate_fenced, Guidance, LeaseFence, LeaseLog};
    use fleet_common::event::AbandonReason;

    let rule = rule_with(SimBehaviour::FixedOnAttempt(2));
    let task = rule_task(1, &rule, Budgets::default());
    let run = |fence: LeaseFence| {
        let task = task.clone();
        async move {
            // 1 s of work per attempt: the first look takes 0.5 s, attempt
            // 1's script starts then and its evaluation ends at 1.5 s.
            let bench = sim::workbench(Duration::from_secs(1));
            bench.target.baseline().await.unwrap();
            let (sink, rx) = EventSink::in_memory(AgentId::parse("agent-test").unwrap(), 1);
            let events = sink.for_lease(&sample_lease(task.clone()));
            let r = remediate_fenced(
                &task,
                &bench,
                &events,
                &AgentMetrics::new(),
                &CancellationToken::new(),
                &Guidance::default(),
                None,
                &LeaseLog::default(),
                &fence,
            )
            .await;
            sink.flush().await.unwrap();
            let started: Vec<(u32, Option<i64>)> = drain(rx)
                .into_iter()
                .filter_map(|e| match e.body {
                    EventBody::AttemptEvaluated {
                        script_started_ms, ..
                    } => Some((e.attempt, script_started_ms)),
                    _ => None,
                })
                .collect();
            (r, started)
        }
    };

    // The deadline passes during attempt 1's evaluation: attempt 2 is
    // never run.
    let (r, started) = run(LeaseFence::until(
        Instant::now() + Duration::from_millis(1200),
    ))
    .await;
    assert_eq!(r, Remediation::Lost(AbandonReason::LocalDeadline));
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].0, 1);
    assert!(started[0].1.is_some(), "the script's start is recorded");

    // Already past: nothing is written at all.
    let (r, started) = run(LeaseFence::until(Instant::now())).await;
    assert_eq!(r, Remediation::Lost(AbandonReason::LocalDeadline));
    assert!(started.is_empty(), "{started:?}");

    // Unfenced, the same rule is fixed on attempt 2.
    let (r, started) = run(LeaseFence::unfenced()).await;
    assert_eq!(
        r,
        Remediation::Finished {
            outcome: Outcome::Fixed { attempt: 2 },
            attempts: 2
        }
    );
    assert_eq!(started.len(), 2);
}

/// The sim target, broken from outside: it cannot be reverted, or (`dead`)
/// it runs nothing and does not answer, while a revert still succeeds.
struct Broken {
    inner: std::sync::Arc<dyn fleet_agent::workbench::Target>,
    dead: bool,
}

impl fleet_agent::workbench::Target for Broken {
    fn baseline(
        &self,
    ) -> fleet_agent::workbench::BoxFuture<'_, Result<(), fleet_agent::AgentError>> {
        self.inner.baseline()
    }
    fn exec<'a>(
        &'a self,
        script: &'a str,
        timeout: Duration,
    ) -> fleet_agent::workbench::BoxFuture<
        'a,
        Result<fleet_agent::workbench::ExecResult, fleet_agent::AgentError>,
    > {
        if self.dead {
            return Box::pin(async {
                Err(fleet_agent::AgentError::Target("no such container".into()))
            });
        }
        self.inner.exec(script, timeout)
    }
    fn revert(&self) -> fleet_agent::workbench::BoxFuture<'_, Result<(), fleet_agent::AgentError>> {
        if self.dead {
            return self.inner.revert();
        }
        Box::pin(async { Err(fleet_agent::AgentError::Target("the target is gone".into())) })
    }
    fn health(&self) -> fleet_agent::workbench::BoxFuture<'_, bool> {
        if self.dead {
            return Box::pin(async { false });
        }
        self.inner.health()
    }
}

/// The outcome of a rule on a sim target broken from outside.
async fn outcome_on_broken_target(dead: bool) -> Remediation {
    let rule = rule_with(SimBehaviour::FixedOnAttempt(3));
    let task = rule_task(11, &rule, Budgets::default());
    let mut bench = sim::workbench(WORK);
    bench.target = std::sync::Arc::new(Broken {
        inner: bench.target.clone(),
        dead,
    });
    bench.target.baseline().await.unwrap();
    let (sink, _rx) = EventSink::in_memory(AgentId::parse("agent-test").unwrap(), 1);
    let events = sink.for_lease(&sample_lease(task.clone()));
    remediate(
        &task,
        &bench,
        &events,
        &AgentMetrics::new(),
        &CancellationToken::new(),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_target_that_cannot_be_reverted_escalates_as_infrastructure() {
    assert_eq!(
        outcome_on_broken_target(false).await,
        Remediation::Finished {
            outcome: Outcome::Escalated {
                reason: EscalationReason::TargetError
            },
            attempts: 1
        }
    );
    assert_eq!(
        EscalationReason::TargetError.class(),
        fleet_common::ReasonClass::Infrastructure,
        "never compared as a regression (DESIGN D6)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_target_that_died_under_the_agent_is_no_health_verdict() {
    assert_eq!(
        outcome_on_broken_target(true).await,
        Remediation::Finished {
            outcome: Outcome::Escalated {
                reason: EscalationReason::TargetError
            },
            attempts: 3
        },
        "scripts that never ran did not break the target"
    );
}
