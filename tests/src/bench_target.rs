//! `bench target`: the three costs of one attempt on a Docker target from
//! `make target-image` — revert to baseline, one script exec, one OpenSCAP
//! rule evaluation — as medians over repeated rounds on one target. The
//! Evaluator's rule evaluation is set against a plain `oscap xccdf eval
//! --rule` of the same rule over the whole datastream, on the same target in
//! the same round (`oscap_rule_ms_p50`, `eval_ratio`), and their verdicts
//! must agree (`verdicts_equal`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::scap::{Machine, OscapEvaluator};
use fleet_agent::workbench::Evaluator;
use fleet_common::event::EvalStatus;
use fleet_common::skill_pack::SkillPack;
use fleet_common::{Budgets, RuleTask, RunId, TaskId};
use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};

/// Goal from the issue: VM snapshot reverts take tens of seconds.
const REVERT_GOAL_MS: f64 = 1000.0;
/// Goals from issue 23: one rule's evaluation, absolute and against plain
/// oscap's.
const EVAL_GOAL_MS: f64 = 500.0;
const EVAL_RATIO_GOAL: f64 = 0.25;
/// Rules each round evaluates both ways: failing, passing and
/// not-applicable ones at baseline.
const RULES: [&str; 4] = [
    "package_cron_installed",
    "file_groupowner_etc_passwd",
    "ensure_logrotate_activated",
    "service_auditd_enabled",
];

pub struct TargetFigures {
    pub revert_ms_p50: f64,
    pub exec_ms_p50: f64,
    pub eval_rule_ms_p50: f64,
    pub oscap_rule_ms_p50: f64,
    pub verdicts_equal: usize,
    pub verdicts: usize,
}

pub async fn bench_target(image: &str, rounds: usize) -> anyhow::Result<TargetFigures> {
    let docker = connect_docker()?;
    let agent = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut config = DockerTargetConfig::new(&agent, 0);
    config.image = image.to_owned();
    let target = DockerTarget::create(&docker, config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}: run `make target-image`"))?;
    let machine = Arc::new(Machine::Docker(target));
    let result = rounds_on(&machine, rounds).await;
    machine.remove().await?;
    result
}

async fn rounds_on(machine: &Arc<Machine>, rounds: usize) -> anyhow::Result<TargetFigures> {
    machine.baseline().await?;
    let evaluator = OscapEvaluator::new(machine.clone());
    let tasks = RULES
        .iter()
        .map(|r| debian_task(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut revert, mut exec, mut eval, mut oscap) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut verdicts, mut verdicts_equal) = (0, 0);
    for _ in 0..rounds {
        let t = Instant::now();
        let out = machine
            .exec(
                "echo bench >> /etc/motd && chmod 0600 /etc/motd",
                Duration::from_secs(30),
            )
            .await?;
        exec.push(ms(t));
        anyhow::ensure!(
            out.exit_code == Some(0),
            "bench script failed: {}",
            out.output
        );

        for task in &tasks {
            let t = Instant::now();
            let e = evaluator.evaluate(task).await?;
            eval.push(ms(t));
            anyhow::ensure!(e.status != EvalStatus::Error, "eval error");

            let t = Instant::now();
            let plain = plain_oscap(machine, task).await?;
            oscap.push(ms(t));
            verdicts += 1;
            verdicts_equal += usize::from(plain == e.status);
        }

        let t = Instant::now();
        machine.revert().await?;
        revert.push(ms(t));
    }
    Ok(TargetFigures {
        revert_ms_p50: median(&mut revert),
        exec_ms_p50: median(&mut exec),
        eval_rule_ms_p50: median(&mut eval),
        oscap_rule_ms_p50: median(&mut oscap),
        verdicts_equal,
        verdicts,
    })
}

/// Plain oscap, one rule, the whole source datastream, no results file:
/// its verdict from the `Result` line it prints.
async fn plain_oscap(machine: &Machine, task: &RuleTask) -> anyhow::Result<EvalStatus> {
    let ds = task.checks.datastream.as_deref().unwrap_or_default();
    let rule = task.checks.xccdf_rule_id(&task.rule);
    let script = format!(
        "oscap xccdf eval --skip-valid --profile {} --rule {rule} {ds} 2>&1 | grep '^Result'",
        task.profile
    );
    let out = machine.exec(&script, Duration::from_secs(180)).await?;
    Ok(match out.output.split_whitespace().nth(1) {
        Some("pass" | "fixed") => EvalStatus::Pass,
        Some("fail") => EvalStatus::Fail,
        Some("notapplicable") => EvalStatus::NotApplicable,
        Some("notchecked") => EvalStatus::NotChecked,
        Some("informational") => EvalStatus::Informational,
        _ => EvalStatus::Error,
    })
}

impl TargetFigures {
    pub fn eval_ratio(&self) -> f64 {
        self.eval_rule_ms_p50 / self.oscap_rule_ms_p50
    }

    pub fn goal_met(&self) -> bool {
        self.revert_ms_p50 <= REVERT_GOAL_MS
            && self.eval_rule_ms_p50 <= EVAL_GOAL_MS
            && self.eval_ratio() <= EVAL_RATIO_GOAL
            && self.verdicts_equal == self.verdicts
    }

    pub fn line(&self) -> String {
        format!(
            "bench target: revert_ms_p50={:.0} exec_ms_p50={:.0} eval_rule_ms_p50={:.0} oscap_rule_ms_p50={:.0} eval_ratio={:.2} verdicts_equal={}/{} revert_goal_ms={REVERT_GOAL_MS:.0} eval_goal_ms={EVAL_GOAL_MS:.0} eval_ratio_goal={EVAL_RATIO_GOAL} goal_met={}",
            self.revert_ms_p50,
            self.exec_ms_p50,
            self.eval_rule_ms_p50,
            self.oscap_rule_ms_p50,
            self.eval_ratio(),
            self.verdicts_equal,
            self.verdicts,
            self.goal_met()
        )
    }
}

pub(crate) fn debian_task(rule: &str) -> anyhow::Result<RuleTask> {
    let dir = crate::procs::repo_root().join("skill-packs/ssg-debian11-standard");
    let pack = SkillPack::load(&dir)?;
    Ok(RuleTask {
        run: RunId(1),
        task: TaskId(1),
        rule: rule.to_owned(),
        family: pack.family_of(rule),
        skill_pack: pack.name.clone(),
        profile: pack.profile.clone(),
        budgets: Budgets::default(),
        checks: pack.checks.for_class(fleet_common::TargetClass::Container),
        rule_text: None,
        job: None,
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
