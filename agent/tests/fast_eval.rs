//! The Evaluator's one-rule datastream (`agent/src/scap/one_rule.rs`) gives
//! OpenSCAP's own verdicts: every rule of the Debian 11 `standard` profile
//! and of the held-out `anssi_np_nt28_minimal` profile, evaluated the fast
//! way (one rule, one-rule datastream) and by a plain `oscap xccdf eval` of
//! the whole source datastream, on the same real Docker target, at baseline
//! (mostly failing) and after known-good fixes (the profile's packages,
//! then `oscap xccdf eval --remediate` of `standard`: those rules pass). A missing image or Docker engine fails the test.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::scap::{map_status, Machine, OscapEvaluator};
use fleet_agent::workbench::Evaluator;
use fleet_common::event::EvalStatus;
use fleet_common::skill_pack::SkillPack;
use fleet_common::{Budgets, RuleTask};
use fleet_scap::Evaluation as ArfResults;
use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};
use support::rule_task;

const PROFILES: [&str; 2] = [
    "xccdf_org.ssgproject.content_profile_standard",
    // Held out: never used to build or tune the one-rule datastream.
    "xccdf_org.ssgproject.content_profile_anssi_np_nt28_minimal",
];
/// Rules failing at baseline that must pass after the known-good fixes.
const FIXED: usize = 4;
/// Known-good fixes: the packages the profile wants (from the image's
/// offline repo), then SSG's own fixes of the profile.
const FIX: &str = "apt-get install -y -q cron auditd rsyslog ntp >/dev/null 2>&1; echo apt=$?;";

fn image() -> String {
    std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into())
}

fn task(rule: &str, profile: &str) -> RuleTask {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../skill-packs/ssg-debian11-standard"
    );
    let pack = SkillPack::load(std::path::Path::new(dir)).unwrap();
    let mut t = rule_task(1, rule, Budgets::default());
    t.profile = profile.to_owned();
    t.skill_pack = pack.name.clone();
    t.checks = pack.checks.for_class(fleet_common::TargetClass::Container);
    t
}

/// Plain oscap: one scan of `profile` over the whole source datastream,
/// every evaluated rule's status.
async fn plain_scan(machine: &Machine, ds: &str, profile: &str) -> BTreeMap<String, EvalStatus> {
    let script = format!(
        "oscap xccdf eval --skip-valid --profile {profile} --results-arf /var/tmp/plain.xml {ds} >/dev/null 2>&1; echo rc=$?"
    );
    let out = machine
        .exec(&script, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        out.output.contains("rc=0") || out.output.contains("rc=2"),
        "{}",
        out.output
    );
    let bytes = machine
        .read_file("/var/tmp/plain.xml", 256 << 20)
        .await
        .unwrap();
    let arf = ArfResults::parse(&String::from_utf8_lossy(&bytes)).unwrap();
    arf.evaluated()
        .map(|r| (r.rule_id.clone(), map_status(r.status)))
        .collect()
}

async fn compare(
    machine: &Machine,
    evaluator: &OscapEvaluator,
    ds: &str,
    state: &str,
) -> BTreeMap<String, EvalStatus> {
    let mut all = BTreeMap::new();
    for profile in PROFILES {
        let started = Instant::now();
        let plain = plain_scan(machine, ds, profile).await;
        assert!(plain.len() > 10, "{profile}: {} rules", plain.len());
        let mut differ = Vec::new();
        for (rule, want) in &plain {
            let got = evaluator.evaluate(&task(rule, profile)).await.unwrap();
            if got.status != *want {
                differ.push(format!("{rule}: fast {:?}, oscap {want:?}", got.status));
            }
            if got.status == EvalStatus::Fail {
                assert!(!got.details.is_empty(), "{rule}: a failure without details");
            }
        }
        let mut tally: BTreeMap<String, usize> = BTreeMap::new();
        for status in plain.values() {
            *tally.entry(format!("{status:?}")).or_default() += 1;
        }
        eprintln!(
            "{state} {profile}: {} rules {tally:?}, {} differ, {:.0}s",
            plain.len(),
            differ.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            differ.is_empty(),
            "{state} {profile}:\n{}",
            differ.join("\n")
        );
        all.extend(plain);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rule_verdicts_equal_plain_oscap_failing_and_passing() {
    let docker = connect_docker().expect("docker engine");
    let agent = format!("t-{}", uuid::Uuid::new_v4().simple());
    let mut config = DockerTargetConfig::new(&agent, 0);
    config.image = image();
    let _cleanup = Cleanup(config.container_name(), config.baseline_image());
    let target = DockerTarget::create(&docker, config)
        .await
        .unwrap_or_else(|e| panic!("cannot start a target from {} ({e})", image()));
    let machine = Arc::new(Machine::Docker(target));
    async {
        machine.baseline().await.unwrap();
        let evaluator = OscapEvaluator::new(machine.clone());
        let ds = task("x", PROFILES[0]).checks.datastream.clone().unwrap();

        let before = compare(&machine, &evaluator, &ds, "baseline").await;
        let started = Instant::now();
        let out = machine
            .exec(
                &format!(
                    "{FIX} oscap xccdf eval --skip-valid --remediate --profile {} {ds} >/dev/null 2>&1; echo rc=$?",
                    PROFILES[0]
                ),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
        eprintln!(
            "remediated: {} in {:.0}s",
            out.output.trim(),
            started.elapsed().as_secs_f64()
        );

        let after = compare(&machine, &evaluator, &ds, "remediated").await;
        let fixed = before
            .iter()
            .filter(|(r, s)| **s == EvalStatus::Fail && after.get(*r) == Some(&EvalStatus::Pass))
            .count();
        eprintln!("{fixed} rules failing at baseline pass after the fixes");
        assert!(fixed >= FIXED, "only {fixed} failing rules pass after the fixes");
    }
    .await;
}

/// Removes the target and its baseline image, on success or panic.
struct Cleanup(String, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in [["rm", "-f", &self.0], ["rmi", "-f", &self.1]] {
            let _ = std::process::Command::new("docker").args(args).output();
        }
    }
}
