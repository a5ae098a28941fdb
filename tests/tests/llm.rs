//! The `openai` brain against the fake endpoint over real HTTP: retries on
//! 429/5xx, refusals and garbage not retried, timeouts, the concurrency
//! limit, a second ask when the answer holds no script — and a first-try
//! fix on a real Docker target judged by OpenSCAP.

use std::sync::Arc;
use std::time::Duration;

use fleet_agent::llm::{ChatClient, LlmError, LlmSettings, Message, OpenAiBrain};
use fleet_agent::workbench::{Brain, Prompt};
use fleet_common::{Budgets, RuleTask, RunId, TaskId};
use fleet_tests::fake_llm::{FakeLlm, Reply};

fn client(llm: &FakeLlm, tweak: impl FnOnce(&mut LlmSettings)) -> ChatClient {
    let mut s = LlmSettings {
        base_url: llm.base_url.clone(),
        model: "fake-model".into(),
        timeout: Duration::from_secs(5),
        retries: 2,
        ..LlmSettings::default()
    };
    tweak(&mut s);
    ChatClient::new(s).unwrap()
}

fn ask(text: &str) -> Vec<Message> {
    vec![Message::user(text)]
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_an_answer() {
    let llm = FakeLlm::start().await;
    llm.on(
        "rule_a",
        vec![
            Reply::Status(503),
            Reply::Status(429),
            Reply::script("true"),
        ],
    );
    let answer = client(&llm, |_| {})
        .complete(&ask("fix rule_a"))
        .await
        .unwrap();
    assert!(answer.contains("```bash\ntrue"), "{answer}");
    assert_eq!(llm.requests(), 3);
}

#[tokio::test]
async fn a_server_that_stays_down_is_unavailable_after_the_retries() {
    let llm = FakeLlm::start().await;
    llm.on("rule_a", vec![Reply::Status(500)]);
    let err = client(&llm, |_| {})
        .complete(&ask("rule_a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Unavailable { status: 500, .. }),
        "{err}"
    );
    assert_eq!(llm.requests(), 3, "first try + 2 retries");
}

#[tokio::test]
async fn refusals_and_garbage_are_not_retried() {
    let llm = FakeLlm::start().await;
    llm.on("bad_model", vec![Reply::Status(400)]);
    llm.on("garbage", vec![Reply::Garbage]);
    let c = client(&llm, |_| {});
    let err = c.complete(&ask("bad_model")).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Refused { status: 400, .. }),
        "{err}"
    );
    let err = c.complete(&ask("garbage")).await.unwrap_err();
    assert!(matches!(err, LlmError::Malformed(_)), "{err}");
    assert_eq!(llm.requests(), 2);
}

#[tokio::test]
async fn a_slow_endpoint_times_out() {
    let llm = FakeLlm::start().await;
    llm.on(
        "rule_a",
        vec![Reply::Slow(
            Duration::from_secs(3),
            Box::new(Reply::script("true")),
        )],
    );
    let c = client(&llm, |s| {
        s.timeout = Duration::from_millis(300);
        s.retries = 1;
    });
    let err = c.complete(&ask("rule_a")).await.unwrap_err();
    assert!(matches!(err, LlmError::Transport(_)), "{err}");
    assert_eq!(llm.requests(), 2);
}

#[tokio::test]
async fn requests_to_one_endpoint_respect_the_concurrency_limit() {
    let llm = FakeLlm::start().await;
    llm.otherwise(Reply::Slow(
        Duration::from_millis(200),
        Box::new(Reply::script("true")),
    ));
    let c = client(&llm, |s| s.concurrency = 2);
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.complete(&ask(&format!("call {i}"))).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(llm.requests(), 6);
    assert_eq!(llm.max_in_flight(), 2, "never more than the limit at once");
}

fn prompt(rule: &str, text: &str) -> Prompt {
    Prompt {
        task: RuleTask {
            run: RunId(1),
            task: TaskId(1),
            rule: rule.into(),
            family: rule.into(),
            skill_pack: "p".into(),
            profile: "xccdf_org.ssgproject.content_profile_standard".into(),
            budgets: Budgets::default(),
            checks: Default::default(),
            rule_text: None,
        },
        attempt: 1,
        prior: vec![],
        lessons: vec![],
        text: text.into(),
    }
}

#[tokio::test]
async fn an_answer_without_a_script_is_asked_again_once() {
    let llm = FakeLlm::start().await;
    llm.on(
        "rule_a",
        vec![
            Reply::Answer("You should install cron.".into()),
            Reply::script("apt-get install -y cron"),
        ],
    );
    llm.on("rule_b", vec![Reply::Answer("I cannot help.".into())]);
    let brain = OpenAiBrain {
        client: client(&llm, |_| {}),
    };
    let script = brain
        .propose(&prompt("rule_a", "Fix rule_a"))
        .await
        .unwrap();
    assert_eq!(script, "apt-get install -y cron\n");
    let err = brain
        .propose(&prompt("rule_b", "Fix rule_b"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no script"), "{err}");
    assert_eq!(llm.requests(), 4);
}

mod on_a_docker_target {
    use super::*;
    use fleet_agent::events::EventSink;
    use fleet_agent::metrics::AgentMetrics;
    use fleet_agent::remediation::{remediate, Remediation};
    use fleet_agent::scap::{Machine, MachineTarget, OscapEvaluator};
    use fleet_agent::workbench::Workbench;
    use fleet_common::lease::Lease;
    use fleet_common::skill_pack::SkillPack;
    use fleet_common::{AgentId, Epoch, Outcome};
    use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};
    use tokio_util::sync::CancellationToken;

    /// Runs `package_cron_installed` on a fresh Docker target with the
    /// `openai` brain on `llm`; the target is removed afterwards.
    async fn remediate_cron(llm: &FakeLlm) -> (Remediation, AgentMetrics) {
        let image =
            std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into());
        let agent = format!("t-{}", uuid::Uuid::new_v4().simple());
        let mut config = DockerTargetConfig::new(&agent, 0);
        config.image = image.clone();
        let target = DockerTarget::create(&connect_docker().unwrap(), config)
            .await
            .unwrap_or_else(|e| panic!("{e}: run `make target-image`"));
        let machine = Arc::new(Machine::Docker(target));
        let bench = Workbench {
            brain: Arc::new(OpenAiBrain {
                client: client(llm, |_| {}),
            }),
            target: Arc::new(MachineTarget(machine.clone())),
            evaluator: Arc::new(OscapEvaluator {
                machine: machine.clone(),
            }),
        };
        bench.target.baseline().await.unwrap();

        let dir = fleet_tests::procs::repo_root().join("skill-packs/ssg-debian11-standard");
        let pack = SkillPack::load(&dir).unwrap();
        let task = RuleTask {
            skill_pack: pack.name.clone(),
            profile: pack.profile.clone(),
            checks: pack.checks.clone(),
            family: pack.family_of("package_cron_installed"),
            ..prompt("package_cron_installed", "").task
        };
        let (sink, _rx) = EventSink::in_memory(AgentId::parse("agent-llm").unwrap(), 1);
        let lease = Lease {
            task: task.clone(),
            epoch: Epoch(1),
            agent: AgentId::parse("agent-llm").unwrap(),
            deadline_ms: 0,
        };
        let events = sink.for_lease(&lease);
        let metrics = AgentMetrics::new();
        let r = remediate(&task, &bench, &events, &metrics, &CancellationToken::new()).await;
        machine.remove().await.unwrap();
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &format!("fleet-baseline:{agent}-0")])
            .output();
        (r, metrics)
    }

    #[tokio::test]
    async fn the_llm_fixes_a_rule_on_the_first_try() {
        let llm = FakeLlm::start().await;
        llm.on(
            "package_cron_installed",
            vec![Reply::script("apt-get install -y -q cron")],
        );
        let (r, _) = remediate_cron(&llm).await;
        assert_eq!(
            r,
            Remediation::Finished {
                outcome: Outcome::Fixed { attempt: 1 },
                attempts: 1
            }
        );
        assert_eq!(llm.requests(), 1);
        let sent = &llm.prompts()[0];
        assert!(sent.contains("package_cron_installed"), "{sent}");
        // The pack's template, filled with the failing check's details.
        assert!(sent.contains("Why the check fails now"), "{sent}");
        assert!(sent.contains("does not exist"), "the check details: {sent}");
    }

    #[tokio::test]
    async fn a_host_destroying_script_never_runs_and_the_next_prompt_says_why() {
        let llm = FakeLlm::start().await;
        llm.on(
            "package_cron_installed",
            vec![
                Reply::script("apt-get install -y cron && rm -rf --no-preserve-root /"),
                Reply::script("apt-get install -y -q cron"),
            ],
        );
        let (r, metrics) = remediate_cron(&llm).await;
        assert_eq!(
            r,
            Remediation::Finished {
                outcome: Outcome::Fixed { attempt: 2 },
                attempts: 2
            }
        );
        assert_eq!(metrics.scripts_refused.get(), 1);
        let second = &llm.prompts()[1];
        assert!(
            second.contains("refused by the script screen (remove_root)"),
            "{second}"
        );
    }
}
