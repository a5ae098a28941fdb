//! Skill replay (DESIGN H1) through the per-rule loop on the sim
//! workbench: the skill from `main` is attempt 1, on the path of any
//! attempt, with no prompt; when it fails the brain takes over.

mod support;

use std::time::Duration;

use fleet_agent::events::EventSink;
use fleet_agent::metrics::AgentMetrics;
use fleet_agent::remediation::{
    remediate_fenced, Guidance, LeaseFence, LeaseLog, Remediation, ReplayResult, Skill,
};
use fleet_agent::sim::{self, SimBehaviour};
use fleet_common::event::{EvalStatus, Event, EventBody, ScriptSource};
use fleet_common::{AgentId, Budgets, Outcome};
use support::{rule_task, rule_with, sample_lease};
use tokio_util::sync::CancellationToken;

const WORK: Duration = Duration::from_millis(50);

fn skill(script: String) -> Skill {
    Skill {
        script,
        blob: "a".repeat(40),
        commit: "b".repeat(40),
    }
}

struct Replayed {
    result: Remediation,
    events: Vec<Event>,
    metrics: AgentMetrics,
    scripts: Vec<String>,
}

/// Remediates a rule fixed by the sim's attempt-3 script, replaying `skill`.
async fn replay(rule: &str, skill: &Skill) -> Replayed {
    let task = rule_task(1, rule, Budgets::default());
    let bench = sim::workbench(WORK);
    bench.target.baseline().await.unwrap();
    let (sink, mut rx) = EventSink::in_memory(AgentId::parse("agent-test").unwrap(), 1);
    let events = sink.for_lease(&sample_lease(task.clone()));
    let (metrics, log) = (AgentMetrics::new(), LeaseLog::default());
    let result = remediate_fenced(
        &task,
        &bench,
        &events,
        &metrics,
        &CancellationToken::new(),
        &Guidance::default(),
        Some(skill),
        &log,
        &LeaseFence::unfenced(),
    )
    .await;
    sink.flush().await.unwrap();
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    Replayed {
        result,
        events: out,
        metrics,
        scripts: log.take().scripts,
    }
}

/// (attempt, kind) of every event.
fn kinds(events: &[Event]) -> Vec<(u32, &'static str)> {
    events.iter().map(|e| (e.attempt, e.body.kind())).collect()
}

fn replays(m: &AgentMetrics) -> [u64; 3] {
    ReplayResult::ALL.map(|r| m.skill_replays(r))
}

#[tokio::test(start_paused = true)]
async fn a_skill_from_main_that_works_fixes_the_rule_without_the_brain() {
    let rule = rule_with(SimBehaviour::FixedOnAttempt(3));
    let working = skill(sim::script_for(&rule, 3));
    let r = replay(&rule, &working).await;
    assert_eq!(
        r.result,
        Remediation::Finished {
            outcome: Outcome::Fixed { attempt: 1 },
            attempts: 1
        }
    );
    // No prompt: a replay shows no lessons (E4, D1).
    assert_eq!(
        kinds(&r.events),
        [
            (1, "attempt_started"),
            (1, "script_proposed"),
            (1, "attempt_evaluated")
        ]
    );
    assert_eq!(
        r.events[1].body,
        EventBody::ScriptProposed {
            script: working.script.clone(),
            source: ScriptSource::Skill {
                blob: "a".repeat(40),
                commit: "b".repeat(40)
            },
        }
    );
    assert!(matches!(
        r.events[2].body,
        EventBody::AttemptEvaluated {
            status: EvalStatus::Pass,
            script_started_ms: Some(_),
            ..
        }
    ));
    assert_eq!(replays(&r.metrics), [1, 0, 0]);
    // The lease's branch records the replayed script as attempt 1.
    assert_eq!(r.scripts, [working.script]);
}

#[tokio::test(start_paused = true)]
async fn a_skill_from_main_that_fails_hands_over_to_the_brain() {
    let rule = rule_with(SimBehaviour::FixedOnAttempt(3));
    let stale = skill(sim::script_for(&rule, 1));
    let r = replay(&rule, &stale).await;
    assert_eq!(
        r.result,
        Remediation::Finished {
            outcome: Outcome::Fixed { attempt: 3 },
            attempts: 3
        }
    );
    let k = kinds(&r.events);
    assert_eq!(
        &k[..3],
        [
            (1, "attempt_started"),
            (1, "script_proposed"),
            (1, "attempt_evaluated")
        ]
    );
    // The brain's attempts have their prompts, and their scripts are its own.
    assert_eq!(
        &k[3..5],
        [(2, "attempt_started"), (2, "prompt_assembled")],
        "{k:?}"
    );
    let sources: Vec<(u32, bool)> = r
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ScriptProposed { source, .. } => Some((e.attempt, source.is_skill())),
            _ => None,
        })
        .collect();
    assert_eq!(sources, [(1, true), (2, false), (3, false)]);
    assert_eq!(replays(&r.metrics), [0, 1, 0]);
    assert_eq!(r.scripts[0], stale.script);
    assert_eq!(r.scripts[2], sim::script_for(&rule, 3));
}

#[tokio::test(start_paused = true)]
async fn a_skill_the_screen_refuses_never_runs() {
    let rule = rule_with(SimBehaviour::FixedOnAttempt(2));
    let hostile = skill("rm -rf --no-preserve-root /\n".into());
    let r = replay(&rule, &hostile).await;
    assert_eq!(
        r.result,
        Remediation::Finished {
            outcome: Outcome::Fixed { attempt: 2 },
            attempts: 2
        }
    );
    let refused = r
        .events
        .iter()
        .find(|e| e.attempt == 1 && e.body.kind() == "attempt_evaluated")
        .expect("attempt 1 evaluated");
    assert!(
        matches!(
            &refused.body,
            EventBody::AttemptEvaluated {
                status: EvalStatus::Error,
                script_started_ms: None,
                contained: Some(_),
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(replays(&r.metrics), [0, 0, 1]);
}
