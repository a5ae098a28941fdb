//! The bundle's composition check (DESIGN H3) end to end: the coordinator
//! and an agent binary on a Docker target, `main` holding skills.
//!
//! - a clean bundle: every section's rule passes after the whole bundle,
//!   so pass_after ≥ pass_before + skills, and nothing is excluded; its
//!   bash export fixes the same rules on another fresh target (H6);
//! - two skills that interfere (each removes the package the other
//!   installs): the first one's rule passes right after its section and
//!   fails after the bundle; the check names the second as the culprit,
//!   opens a `bundle_exclude` ledger entry, and the next bundle leaves the
//!   culprit out until an operator decides.

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_common::api::RunStatus;
use fleet_common::bundle::Bundle;
use fleet_common::host::{HostRow, HostRunSubmitted, SubmitCompose};
use fleet_common::RunId;
use fleet_scap::RuleStatus;
use fleet_tests::export::ExportTarget;
use fleet_tests::fleet::{Fleet, FleetOpts};

const PACK: &str = "ssg-debian11-standard";

fn image() -> String {
    std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into())
}

fn apt(package: &str) -> String {
    format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q {package}\n")
}

async fn check(fleet: &Fleet) -> (RunId, HostRow, RunStatus) {
    let submitted: HostRunSubmitted = reqwest::Client::new()
        .post(format!("{}/api/v1/bundle/check", fleet.api))
        .bearer_auth(&fleet.api_token)
        .json(&SubmitCompose {
            skill_pack: PACK.into(),
            profile: None,
        })
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = submitted.run;
    let status = fleet.wait_completed(run, Duration::from_secs(600)).await;
    let rows: Vec<HostRow> = fleet.api_get(&format!("/api/v1/runs/{run}/hosts")).await;
    (
        run,
        rows.into_iter().next().expect("one compose host"),
        status,
    )
}

#[tokio::test]
async fn a_clean_bundle_passes_and_an_interfering_skill_is_named_and_taken_out() {
    let fleet = Fleet::start(FleetOpts {
        agents: 1,
        target_image: Some(image()),
        auto_dream: false,
        ..FleetOpts::default()
    })
    .await;
    eprintln!("compose test: logs in {}", fleet.logs.display());

    // Clean: three package skills that leave each other alone.
    fleet.commit_on_main(
        &[
            ("skills/package_cron_installed.sh", apt("cron").as_bytes()),
            (
                "skills/package_rsyslog_installed.sh",
                apt("rsyslog").as_bytes(),
            ),
            (
                "skills/package_audit_installed.sh",
                apt("auditd").as_bytes(),
            ),
        ],
        "test: clean skills",
    );
    let (run, host, status) = check(&fleet).await;
    let report = host.report.expect("compose report");
    assert!(report.interference.is_empty(), "{report:?}");
    let b = status.bundle.expect("the compose run's own figures");
    assert_eq!(b.run, run);
    assert_eq!(
        (b.skills, b.interference, b.health_failed),
        (3, 0, 0),
        "{b:?}"
    );
    assert!(b.pass_after >= b.pass_before + b.skills, "{}", b.line());
    let (ok, out, _) = fleet.cli(&["status", &run.to_string()]);
    assert!(ok && out.contains(&b.line()), "{out}");

    // H6: the bash export fixes on a fresh target the rules the check saw
    // fixed by the bundle.
    let fixed_by_bundle: BTreeSet<String> = report
        .passing_after
        .iter()
        .filter(|r| !report.passing_before.contains(r))
        .cloned()
        .collect();
    let (ok, script, err) = fleet.cli(&["export", "--skill-pack", PACK, "--format", "bash"]);
    assert!(ok, "{err}");
    let target = ExportTarget::start("compose").await;
    let rules = [
        "package_cron_installed",
        "package_rsyslog_installed",
        "package_audit_installed",
    ];
    let before = target.scan(&rules).await;
    let ran = target.exec(&script).await;
    assert_eq!(ran.exit_code, Some(0), "{}", ran.output);
    let after = target.scan(&rules).await;
    let fixed_by_export: BTreeSet<String> = rules
        .iter()
        .filter(|r| before[**r] != RuleStatus::Pass && after[**r] == RuleStatus::Pass)
        .map(|r| r.to_string())
        .collect();
    target.remove().await;
    assert_eq!(
        fixed_by_export, fixed_by_bundle,
        "the export and the bundle check differ"
    );

    // Interfering: whichever comes second removes the first one's package.
    let bundle: Bundle = fleet
        .api_get(&format!("/api/v1/bundle?skill_pack={PACK}"))
        .await;
    let order: Vec<&str> = bundle
        .sections
        .iter()
        .map(|s| s.rule.as_str())
        .filter(|r| *r == "package_cron_installed" || *r == "package_rsyslog_installed")
        .collect();
    let (first, second) = (order[0], order[1]);
    let package = |rule: &str| {
        if rule == "package_cron_installed" {
            "cron"
        } else {
            "rsyslog"
        }
    };
    let culprit = format!(
        "{}DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {}\n",
        apt(package(second)),
        package(first)
    );
    fleet.commit_on_main(
        &[(&format!("skills/{second}.sh"), culprit.as_bytes())],
        "test: a skill that undoes another",
    );
    let (_, host, status) = check(&fleet).await;
    let report = host.report.expect("compose report");
    assert_eq!(report.interference.len(), 1, "{report:?}");
    let i = &report.interference[0];
    assert_eq!(
        (i.rule.as_str(), i.broken_by.as_deref()),
        (first, Some(second))
    );
    assert_eq!(status.bundle.unwrap().interference, 1);

    // The culprit leaves the bundle with an open ledger entry and evidence
    // (the coordinator reviews a finished check within a tick).
    let start = std::time::Instant::now();
    loop {
        let (ok, out, err) = fleet.cli(&["promotions", "list", "--open"]);
        assert!(ok, "{err}");
        if out.contains(second) {
            assert!(
                out.contains(&format!("applying {second} makes {first} fail")),
                "{out}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no open entry for {second}: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    loop {
        let bundle: Bundle = fleet
            .api_get(&format!("/api/v1/bundle?skill_pack={PACK}"))
            .await;
        let rules: Vec<&str> = bundle.sections.iter().map(|s| s.rule.as_str()).collect();
        if !rules.contains(&second) {
            assert!(rules.contains(&first), "{rules:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{second} still in the bundle"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fleet.shutdown().await;
}
