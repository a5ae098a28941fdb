//! The Evaluator, the `ssg` brain, health checks and the rule loop on a
//! real Docker target from `make target-image`, with real OpenSCAP inside.
//! No Redis: events go to memory. A missing image fails the tests.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fleet_agent::events::EventSink;
use fleet_agent::metrics::AgentMetrics;
use fleet_agent::remediation::{remediate, Remediation};
use fleet_agent::scap::{Machine, MachineTarget, OscapEvaluator, SsgBrain};
use fleet_agent::workbench::{BoxFuture, Brain, Evaluator, Prompt, Target, Workbench};
use fleet_agent::AgentError;
use fleet_common::event::{EvalStatus, EventBody};
use fleet_common::skill_pack::SkillPack;
use fleet_common::{AgentId, Budgets, EscalationReason, Outcome, RuleTask};
use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};
use support::{rule_task, sample_lease};
use tokio_util::sync::CancellationToken;

fn image() -> String {
    std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into())
}

/// A target at baseline, removed on drop (best effort, via the CLI).
struct Fixture {
    machine: Arc<Machine>,
    name: String,
    agent: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &format!("fleet-baseline:{}-0", self.agent)])
            .output();
    }
}

async fn fixture() -> Fixture {
    let docker = connect_docker().expect("docker engine");
    let agent = format!("t-{}", uuid::Uuid::new_v4().simple());
    let mut config = DockerTargetConfig::new(&agent, 0);
    config.image = image();
    let name = config.container_name();
    let target = DockerTarget::create(&docker, config)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot start a target from {} ({e}): run `make target-image`",
                image()
            )
        });
    let machine = Arc::new(Machine::Docker(target));
    machine.baseline().await.unwrap();
    Fixture {
        machine,
        name,
        agent,
    }
}

/// The shipped Debian 11 pack's task for `rule`.
fn task(rule: &str) -> RuleTask {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../skill-packs/ssg-debian11-standard"
    );
    let pack = SkillPack::load(std::path::Path::new(dir)).unwrap();
    let mut t = rule_task(
        1,
        rule,
        Budgets {
            max_attempts: 2,
            wall_time_s: 600,
        },
    );
    t.profile = pack.profile.clone();
    t.family = pack.family_of(rule);
    t.skill_pack = pack.name.clone();
    // Docker targets: the pack's VM-only checks are not theirs.
    t.checks = pack.checks.for_class(fleet_common::TargetClass::Container);
    t
}

#[tokio::test]
async fn a_rule_fails_before_and_passes_after_a_known_good_command_and_revert_undoes_it() {
    let f = fixture().await;
    let eval = OscapEvaluator::new(f.machine.clone());
    let target = MachineTarget(f.machine.clone());
    let t = task("package_cron_installed");

    let before = eval.evaluate(&t).await.unwrap();
    assert_eq!(before.status, EvalStatus::Fail, "{}", before.details);
    assert!(
        before.details.contains("cron"),
        "details name the package: {}",
        before.details
    );

    let r = target
        .exec("apt-get install -y -q cron", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "offline install failed: {}", r.output);
    let after = eval.evaluate(&t).await.unwrap();
    assert_eq!(after.status, EvalStatus::Pass, "{}", after.details);
    assert!(after.details.is_empty());

    target.revert().await.unwrap();
    assert_eq!(eval.evaluate(&t).await.unwrap().status, EvalStatus::Fail);
}

async fn run(task: &RuleTask, bench: &Workbench) -> (Remediation, Vec<EventBody>) {
    let (sink, mut rx) = EventSink::in_memory(AgentId::parse("agent-test").unwrap(), 1);
    let events = sink.for_lease(&sample_lease(task.clone()));
    let r = remediate(
        task,
        bench,
        &events,
        &AgentMetrics::new(),
        &CancellationToken::new(),
    )
    .await;
    sink.flush().await.unwrap();
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e.body);
    }
    (r, out)
}

fn finished(r: Remediation) -> Outcome {
    match r {
        Remediation::Finished { outcome, .. } => outcome,
        Remediation::Cancelled => panic!("cancelled"),
        Remediation::Lost(reason) => panic!("lease lost: {reason:?}"),
        Remediation::Held { .. } => panic!("held: the brain's endpoint was down"),
    }
}

#[tokio::test]
async fn the_ssg_brain_escalates_rules_without_content_fixes_and_skips_passing_ones() {
    let f = fixture().await;
    let bench = Workbench {
        brain: Arc::new(SsgBrain::new(f.machine.clone())),
        target: Arc::new(MachineTarget(f.machine.clone())),
        evaluator: Arc::new(OscapEvaluator::new(f.machine.clone())),
    };
    // SSG 0.1.65 ships no bash fix for this rule (only Ansible and others).
    let (r, _) = run(&task("package_audit_installed"), &bench).await;
    assert_eq!(
        finished(r),
        Outcome::Escalated {
            reason: EscalationReason::NoFixAvailable
        }
    );
    // The image's /etc/passwd is owned by root.
    let (r, _) = run(&task("file_owner_etc_passwd"), &bench).await;
    assert_eq!(finished(r), Outcome::AlreadyPassing);
    // Partitions cannot change in a container: the check fails, the
    // content has no fix.
    let (r, _) = run(&task("partition_for_home"), &bench).await;
    assert_eq!(
        finished(r),
        Outcome::Escalated {
            reason: EscalationReason::NoFixAvailable
        }
    );
}

/// A Worker that "fixes" the rule and breaks the machine with it.
struct Vandal;

impl Brain for Vandal {
    fn propose<'a>(&'a self, _: &'a Prompt) -> BoxFuture<'a, Result<String, AgentError>> {
        Box::pin(async { Ok("apt-get install -y -q cron && rm -f /etc/shadow".to_owned()) })
    }
}

#[tokio::test]
async fn a_fix_that_breaks_the_target_fails_health_and_is_reverted() {
    let f = fixture().await;
    let bench = Workbench {
        brain: Arc::new(Vandal),
        target: Arc::new(MachineTarget(f.machine.clone())),
        evaluator: Arc::new(OscapEvaluator::new(f.machine.clone())),
    };
    let t = task("package_cron_installed");
    let (r, events) = run(&t, &bench).await;
    assert_eq!(
        finished(r),
        Outcome::Escalated {
            reason: EscalationReason::Health
        },
        "the rule passed, but a target without /etc/shadow is not fixed"
    );
    let evaluated: Vec<_> = events
        .iter()
        .filter_map(|b| match b {
            EventBody::AttemptEvaluated {
                status,
                health_ok,
                health_failed,
                ..
            } => Some((*status, *health_ok, health_failed.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(evaluated.len(), 2, "{evaluated:?}");
    for e in &evaluated {
        assert_eq!(*e, (EvalStatus::Pass, false, vec!["accounts".to_string()]));
    }
    // Reverted after the failed attempt: the account database is back.
    let r = MachineTarget(f.machine.clone())
        .exec("test -s /etc/shadow", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0));
}
