//! `bench target`: the three costs of one attempt on a Docker target from
//! `make target-image` — revert to baseline, one script exec, one OpenSCAP
//! rule evaluation — as medians over repeated rounds on one target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::scap::{Machine, OscapEvaluator};
use fleet_agent::workbench::Evaluator;
use fleet_common::skill_pack::SkillPack;
use fleet_common::{Budgets, RuleTask, RunId, TaskId};
use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};

/// Goal from the issue: VM snapshot reverts take tens of seconds.
const REVERT_GOAL_MS: f64 = 1000.0;

pub struct TargetFigures {
    pub revert_ms_p50: f64,
    pub exec_ms_p50: f64,
    pub eval_rule_ms_p50: f64,
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
    let task = debian_task("package_cron_installed")?;
    let (mut revert, mut exec, mut eval) = (Vec::new(), Vec::new(), Vec::new());
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

        let t = Instant::now();
        let e = evaluator.evaluate(&task).await?;
        eval.push(ms(t));
        anyhow::ensure!(
            !e.status.eq(&fleet_common::event::EvalStatus::Error),
            "eval error"
        );

        let t = Instant::now();
        machine.revert().await?;
        revert.push(ms(t));
    }
    Ok(TargetFigures {
        revert_ms_p50: median(&mut revert),
        exec_ms_p50: median(&mut exec),
        eval_rule_ms_p50: median(&mut eval),
    })
}

impl TargetFigures {
    pub fn line(&self) -> String {
        format!(
            "bench target: revert_ms_p50={:.0} exec_ms_p50={:.0} eval_rule_ms_p50={:.0} revert_goal_ms={REVERT_GOAL_MS:.0} goal_met={}",
            self.revert_ms_p50,
            self.exec_ms_p50,
            self.eval_rule_ms_p50,
            self.revert_ms_p50 <= REVERT_GOAL_MS
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
