//! Hostile scripts from the LLM on a real Docker target (DESIGN T1): a
//! memory hog, a try for the Docker engine and a fork bomb each fail with
//! the reason in the attempt's `attempt_evaluated` event (and so in
//! `run_events.body`) and in what the Reflector and the next prompt see;
//! the loop carries on, and the next lease on the same target fixes its
//! rule.

use std::sync::Arc;
use std::time::Duration;

use fleet_agent::events::EventSink;
use fleet_agent::llm::{ChatClient, LlmSettings, OpenAiBrain};
use fleet_agent::metrics::AgentMetrics;
use fleet_agent::remediation::{remediate, Remediation};
use fleet_agent::scap::{Machine, MachineTarget, OscapEvaluator};
use fleet_agent::workbench::Workbench;
use fleet_common::event::EvalStatus;
use fleet_common::lease::Lease;
use fleet_common::skill_pack::SkillPack;
use fleet_common::{
    AgentId, Budgets, Epoch, EscalationReason, EventBody, Outcome, RuleTask, RunId, TaskId,
};
use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};
use fleet_tests::fake_llm::{FakeLlm, Reply};
use tokio_util::sync::CancellationToken;

const RULE: &str = "package_cron_installed";

const MEMORY_HOG: &str = "apt-get install -y -q cron >/dev/null\nhead -c 4000m /dev/zero | tail";
const DOCKER_ENGINE: &str = "exec 3<>/dev/tcp/172.17.0.1/2375 || curl --unix-socket /var/run/docker.sock http://d/containers/json";
const FORK_BOMB: &str = "bomb() { bomb | bomb & }; bomb";

fn task(pack: &SkillPack, epoch_budget: u32) -> RuleTask {
    RuleTask {
        run: RunId(1),
        task: TaskId(1),
        rule: RULE.into(),
        family: pack.family_of(RULE),
        skill_pack: pack.name.clone(),
        profile: pack.profile.clone(),
        budgets: Budgets {
            max_attempts: epoch_budget,
            wall_time_s: 600,
        },
        checks: pack.checks.for_class(fleet_common::TargetClass::Container),
        rule_text: None,
        job: None,
    }
}

/// One lease's remediation on `bench`; the events it emitted.
async fn lease(
    bench: &Workbench,
    task: &RuleTask,
    epoch: u64,
    metrics: &AgentMetrics,
) -> (Remediation, Vec<EventBody>) {
    let agent = AgentId::parse("agent-sandbox").unwrap();
    let (sink, mut rx) = EventSink::in_memory(agent.clone(), 1);
    let lease = Lease {
        task: task.clone(),
        epoch: Epoch(epoch),
        agent,
        deadline_ms: 0,
    };
    let events = sink.for_lease(&lease);
    let r = remediate(task, bench, &events, metrics, &CancellationToken::new()).await;
    sink.flush().await.unwrap();
    let mut emitted = Vec::new();
    while let Ok(e) = rx.try_recv() {
        emitted.push(e.body);
    }
    (r, emitted)
}

fn evaluated(events: &[EventBody]) -> Vec<(EvalStatus, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            EventBody::AttemptEvaluated {
                status, contained, ..
            } => Some((*status, contained.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn hostile_scripts_fail_with_the_sandboxs_reason_and_the_next_lease_fixes_its_rule() {
    let llm = FakeLlm::start().await;
    // The Reflector (its template asks for JSON) always draws this lesson.
    llm.on(
        "Answer with JSON only",
        vec![Reply::lesson(
            "Install the package with apt-get install -y; never allocate memory or fork without bound.",
            None,
            "family",
        )],
    )
    .on(
        RULE,
        vec![
            Reply::script(MEMORY_HOG),
            Reply::script(DOCKER_ENGINE),
            Reply::script(FORK_BOMB),
            Reply::script("apt-get install -y -q cron"),
        ],
    );

    let image =
        std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into());
    let agent = format!("t-{}", uuid::Uuid::new_v4().simple());
    let mut config = DockerTargetConfig::new(&agent, 0);
    config.image = image;
    let target = DockerTarget::create(&connect_docker().unwrap(), config)
        .await
        .unwrap_or_else(|e| panic!("{e}: run `make target-image`"));
    let machine = Arc::new(Machine::Docker(target));
    let settings = LlmSettings {
        base_url: llm.base_url.clone(),
        model: "fake-model".into(),
        timeout: Duration::from_secs(5),
        retries: 2,
        ..LlmSettings::default()
    };
    let bench = Workbench {
        brain: Arc::new(OpenAiBrain {
            client: ChatClient::new(settings).unwrap(),
        }),
        target: Arc::new(MachineTarget(machine.clone())),
        evaluator: Arc::new(OscapEvaluator::new(machine.clone())),
    };
    bench.target.baseline().await.unwrap();
    let pack =
        SkillPack::load(&fleet_tests::procs::repo_root().join("skill-packs/ssg-debian11-standard"))
            .unwrap();
    let metrics = AgentMetrics::new();

    // Lease 1: three hostile attempts, each contained, then out of budget.
    let (first, events) = lease(&bench, &task(&pack, 3), 1, &metrics).await;
    eprintln!("lease 1: {first:?}");
    let evals = evaluated(&events);
    eprintln!("evaluations: {evals:#?}");
    assert!(
        matches!(
            first,
            Remediation::Finished {
                // A container the bomb took down fails the health checks.
                outcome: Outcome::Escalated {
                    reason: EscalationReason::AttemptBudget | EscalationReason::Health
                },
                attempts: 3
            }
        ),
        "{first:?}"
    );
    assert_eq!(evals.len(), 3, "{evals:?}");
    let hog = evals[0].1.as_deref().unwrap_or_default();
    assert!(
        hog.starts_with("killed: out of memory (limit 512 MiB"),
        "{hog}"
    );
    // cron is installed by then, so the check would pass: a script the
    // sandbox killed is not judged, never a fix.
    assert_eq!(evals[0].0, EvalStatus::Error);
    assert_eq!(evals[2].0, EvalStatus::Error);
    assert_eq!(
        evals[1].1, None,
        "a refused connection is the script's own failure"
    );
    let bomb = evals[2].1.as_deref().unwrap_or_default();
    assert!(
        bomb.contains("pid limit reached (256 processes)") || bomb.contains("container was killed"),
        "{bomb}"
    );
    assert!(metrics.scripts_contained.get() >= 2);

    // What the LLM was told: the Reflector saw the sandbox's verdict and
    // the failed connection, the next Worker prompt says why.
    let prompts = llm.prompts();
    let reflector_saw = |needle: &str| {
        prompts
            .iter()
            .any(|p| p.contains("Answer with JSON only") && p.contains(needle))
    };
    assert!(reflector_saw(
        "[sandbox: killed: out of memory (limit 512 MiB"
    ));
    assert!(
        reflector_saw("Network is unreachable") || reflector_saw("No such file"),
        "{prompts:#?}"
    );
    assert!(
        prompts.iter().any(|p| !p.contains("Answer with JSON only")
            && p.contains("The target's sandbox stopped the script: killed: out of memory")),
        "{prompts:#?}"
    );

    // Lease 2 on the same target: the loop reverted it; the fix works.
    let (second, _) = lease(&bench, &task(&pack, 2), 2, &metrics).await;
    assert_eq!(
        second,
        Remediation::Finished {
            outcome: Outcome::Fixed { attempt: 1 },
            attempts: 1
        }
    );
    machine.remove().await.unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &format!("fleet-baseline:{agent}-0")])
        .output();
}
