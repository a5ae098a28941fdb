//! `bench fixrate`: how many of the rules failing on a fresh target the
//! fleet's per-rule loop with the `ssg` brain fixes, against the content's
//! own one-shot remediation (`oscap xccdf eval --remediate`) on an
//! identical fresh target, in the same run.
//!
//! One Docker target from `make target-image`: a whole-profile scan finds
//! the N failing rules; each goes through `remediate` with the real
//! Workbench (pack budgets, health checks) and the target is reverted
//! after it; then, reverted to its fresh image again, the target runs
//! `oscap --remediate` and a second scan. A rule counts fixed when it
//! failed at baseline and passes afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleet_agent::events::EventSink;
use fleet_agent::metrics::AgentMetrics;
use fleet_agent::remediation::{remediate, Remediation};
use fleet_agent::scap::{Machine, MachineTarget, OscapEvaluator, SsgBrain};
use fleet_agent::workbench::Workbench;
use fleet_common::lease::Lease;
use fleet_common::skill_pack::SkillPack;
use fleet_common::{AgentId, Budgets, Epoch, Outcome, RuleTask, RunId, TaskId};
use fleet_coordinator::catalog::Catalogs;
use fleet_scap::{Evaluation, RuleStatus};
use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};
use tokio_util::sync::CancellationToken;

const PACK: &str = "skill-packs/ssg-debian11-standard";
const SCAN_TIMEOUT: Duration = Duration::from_secs(900);
const ARF: &str = "/var/tmp/fleet-bench/arf.xml";

pub struct FixrateFigures {
    pub profile: String,
    /// Rules of the profile failing on a fresh target.
    pub failing: usize,
    pub fleet_fixed: usize,
    pub oscap_fixed: usize,
    /// The fleet loop's outcomes over the failing rules, by kind/reason.
    pub fleet_outcomes: BTreeMap<String, usize>,
}

impl FixrateFigures {
    pub fn line(&self) -> String {
        format!(
            "bench fixrate: profile={} rules_failing_at_baseline={} fleet_ssg={:.2} oscap_remediate={:.2}",
            self.profile,
            self.failing,
            rate(self.fleet_fixed, self.failing),
            rate(self.oscap_fixed, self.failing)
        )
    }
}

fn rate(fixed: usize, of: usize) -> f64 {
    if of == 0 {
        1.0
    } else {
        fixed as f64 / of as f64
    }
}

pub async fn bench_fixrate(image: &str) -> anyhow::Result<FixrateFigures> {
    let pack = SkillPack::load(&crate::procs::repo_root().join(PACK))?;
    let docker = connect_docker()?;
    let agent = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut config = DockerTargetConfig::new(&agent, 0);
    config.image = image.to_owned();
    // As the coordinator's baseline scan: a whole-profile scan needs room.
    config.cpus = 2.0;
    config.memory_bytes = 1024 * 1024 * 1024;
    let target = DockerTarget::create(&docker, config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}: run `make target-image`"))?;
    let machine = Arc::new(Machine::Docker(target));
    let result = run(&machine, &pack).await;
    machine.remove().await?;
    result
}

async fn run(machine: &Arc<Machine>, pack: &SkillPack) -> anyhow::Result<FixrateFigures> {
    let datastream = pack
        .checks
        .datastream
        .clone()
        .context("pack has no datastream")?;
    let profile = &pack.profile;
    // The rule list and text exactly as the coordinator plans a run.
    let rules = Catalogs::default()
        .rules(pack, profile)
        .await?
        .context("pack has no SCAP content")?;
    machine.baseline().await?;

    let t = Instant::now();
    let baseline = scan(machine, &datastream, profile, false).await?;
    let failing: Vec<_> = rules
        .into_iter()
        .filter(|(rule, _)| status(&baseline, &pack.checks.xccdf_rule_id(rule)) == RuleStatus::Fail)
        .collect();
    eprintln!(
        "bench fixrate: baseline scan {:.0}s: {} of the profile's rules fail",
        t.elapsed().as_secs_f64(),
        failing.len()
    );

    let bench = Workbench {
        brain: Arc::new(SsgBrain::new(machine.clone())),
        target: Arc::new(MachineTarget(machine.clone())),
        evaluator: Arc::new(OscapEvaluator::new(machine.clone())),
    };
    let me = AgentId::parse("bench-fixrate").map_err(anyhow::Error::msg)?;
    // Events go to memory; the receiver is kept so the sink stays open.
    let (sink, _events) = EventSink::in_memory(me.clone(), 1);
    let metrics = AgentMetrics::new();
    let mut fleet_outcomes = BTreeMap::new();
    let mut fleet_fixed = 0;
    for (i, (rule, text)) in failing.iter().enumerate() {
        let t = Instant::now();
        let task = RuleTask {
            run: RunId(1),
            task: TaskId(i as i64 + 1),
            rule: rule.clone(),
            family: pack.family_of(rule),
            skill_pack: pack.name.clone(),
            profile: profile.clone(),
            budgets: Budgets::default(),
            checks: pack.checks.for_class(fleet_common::TargetClass::Container),
            rule_text: Some(text.clone()),
            job: None,
        };
        let lease = Lease {
            task: task.clone(),
            epoch: Epoch((1 << Epoch::GRANT_BITS) | 1),
            agent: me.clone(),
            deadline_ms: 0,
        };
        let events = sink.for_lease(&lease);
        let r = remediate(&task, &bench, &events, &metrics, &CancellationToken::new()).await;
        let Remediation::Finished { outcome, attempts } = r else {
            anyhow::bail!("{rule}: cancelled");
        };
        // As the runner does after a fixed lease (the loop reverts every
        // other attempt itself): the next rule starts fresh.
        if matches!(outcome, Outcome::Fixed { .. }) {
            fleet_fixed += 1;
            machine.revert().await?;
        }
        let label = match outcome {
            Outcome::Escalated { reason } => format!("escalated/{}", reason.as_str()),
            other => other.kind().to_owned(),
        };
        eprintln!(
            "bench fixrate: [{}/{}] {rule}: {label} after {attempts} attempt(s), {:.0}s",
            i + 1,
            failing.len(),
            t.elapsed().as_secs_f64()
        );
        *fleet_outcomes.entry(label).or_insert(0) += 1;
    }
    sink.flush().await?;

    let t = Instant::now();
    machine.revert().await?;
    remediate_profile(machine, &datastream, profile).await?;
    let after = scan(machine, &datastream, profile, false).await?;
    let oscap_fixed = failing
        .iter()
        .filter(|(rule, _)| status(&after, &pack.checks.xccdf_rule_id(rule)).is_compliant())
        .count();
    eprintln!(
        "bench fixrate: oscap --remediate and re-scan {:.0}s: {oscap_fixed} fixed; fleet outcomes {fleet_outcomes:?}",
        t.elapsed().as_secs_f64()
    );
    Ok(FixrateFigures {
        profile: profile.clone(),
        failing: failing.len(),
        fleet_fixed,
        oscap_fixed,
        fleet_outcomes,
    })
}

fn status(results: &HashMap<String, RuleStatus>, rule: &str) -> RuleStatus {
    results
        .get(rule)
        .copied()
        .unwrap_or(RuleStatus::NotSelected)
}

/// The content's one-shot remediation: oscap evaluates the profile and runs
/// the fix of every failing rule.
async fn remediate_profile(
    machine: &Machine,
    datastream: &str,
    profile: &str,
) -> anyhow::Result<()> {
    scan(machine, datastream, profile, true).await.map(drop)
}

/// Every rule's result of one whole-profile `oscap xccdf eval` on the
/// machine (with `--remediate` when `remediate`).
async fn scan(
    machine: &Machine,
    datastream: &str,
    profile: &str,
    remediate: bool,
) -> anyhow::Result<HashMap<String, RuleStatus>> {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    // Exit 2 means some rule failed, which is the point of scanning.
    let script = format!(
        "mkdir -p /var/tmp/fleet-bench && oscap xccdf eval --skip-valid {} --profile {} --results-arf {ARF} {} >/var/tmp/fleet-bench/log 2>&1; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 2 ] || {{ tail -c 2000 /var/tmp/fleet-bench/log; exit $rc; }}",
        if remediate { "--remediate" } else { "" },
        q(profile),
        q(datastream)
    );
    let out = machine.exec(&script, SCAN_TIMEOUT).await?;
    anyhow::ensure!(
        out.exit_code == Some(0),
        "oscap exited with {:?}: {}",
        out.exit_code,
        out.output.trim()
    );
    let bytes = machine.read_file(ARF, 256 * 1024 * 1024).await?;
    let parsed =
        tokio::task::spawn_blocking(move || Evaluation::parse(&String::from_utf8_lossy(&bytes)))
            .await??;
    Ok(parsed
        .rules()
        .iter()
        .map(|r| (r.rule_id.clone(), r.status))
        .collect())
}
