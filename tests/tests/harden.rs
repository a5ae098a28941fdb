//! Hardening hosts end to end (DESIGN H4, H5): the coordinator and agent
//! binaries on Docker targets, three "hosts" (containers of the target
//! image running sshd on an internal network) reached only through the
//! agents' SSH sandboxes, and `main` holding three verified skills.
//!
//! - `--check` changes nothing (checksums of the files the skills touch);
//! - two hosts are hardened, and a fresh `oscap` run by the test agrees
//!   with the fleet's after-scan; the third, labelled `fragile`, has a
//!   section that breaks its health: it is reverted by its inventory's
//!   revert command and escalated, the section named;
//! - `--check` on a hardened host would apply nothing;
//! - a failing canary stops the rollout: the next host is never leased;
//! - an agent SIGKILLed in the middle of a host is replaced, and the next
//!   holder re-scans and never re-applies a rule that already passes;
//! - bad inventories give a clear error and touch no host.

use std::time::Duration;

use fleet_common::bundle::Bundle;
use fleet_common::host::HostRow;
use fleet_common::RunId;
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::ssh_hosts::{run, SshHosts};

const PACK: &str = "ssg-debian11-standard";
const DATASTREAM: &str = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml";
const PROFILE: &str = "xccdf_org.ssgproject.content_profile_standard";
const PREFIX: &str = "xccdf_org.ssgproject.content_rule_";
/// What the skills touch, for the `--check` checksums.
const TOUCHED: &[&str] = &["/var/lib/dpkg/status", "/etc/shadow", "/etc/passwd"];

fn image() -> String {
    std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into())
}

fn apt(package: &str) -> String {
    format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q {package}\n")
}

/// Three verified skills on `main`; the audit one wrecks `/etc/shadow` on
/// a host marked fragile (the pack's `accounts` health check then fails).
fn put_skills(fleet: &Fleet, slow: bool) {
    let cron = apt("cron");
    let rsyslog = if slow {
        format!("sleep 20\n{}", apt("rsyslog"))
    } else {
        apt("rsyslog")
    };
    let audit = format!(
        "{}if [ -e /etc/fleet-fragile ]; then : > /etc/shadow; fi\n",
        apt("auditd")
    );
    fleet.commit_on_main(
        &[
            ("skills/package_cron_installed.sh", cron.as_bytes()),
            ("skills/package_rsyslog_installed.sh", rsyslog.as_bytes()),
            ("skills/package_audit_installed.sh", audit.as_bytes()),
        ],
        "test: verified skills",
    );
}

async fn fleet(agents: usize, tag: &str) -> Fleet {
    let fleet = Fleet::start(FleetOpts {
        agents,
        target_image: Some(image()),
        auto_dream: false,
        ..FleetOpts::default()
    })
    .await;
    eprintln!("harden test {tag}: logs in {}", fleet.logs.display());
    fleet
}

async fn bundle(fleet: &Fleet) -> Bundle {
    fleet
        .api_get(&format!("/api/v1/bundle?skill_pack={PACK}"))
        .await
}

/// The run id `harden` printed ("harden: run N …").
fn run_of(stderr: &str) -> RunId {
    let n = stderr
        .split("harden: run ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no run id in: {stderr}"));
    RunId(n)
}

async fn hosts(fleet: &Fleet, run: RunId) -> Vec<HostRow> {
    fleet.api_get(&format!("/api/v1/runs/{run}/hosts")).await
}

fn row<'a>(rows: &'a [HostRow], host: &str) -> &'a HostRow {
    rows.iter()
        .find(|r| r.host == host)
        .unwrap_or_else(|| panic!("no row for {host}: {rows:?}"))
}

fn harden(fleet: &Fleet, inventory: &std::path::Path, extra: &[&str]) -> (bool, String, String) {
    let inv = inventory.to_str().unwrap();
    let mut args = vec!["harden", "--inventory", inv, "--skill-pack", PACK];
    args.extend_from_slice(extra);
    let (ok, out, err) = fleet.cli(&args);
    eprintln!("$ fleet-coordinator {}\n{out}{err}", args.join(" "));
    (ok, out, err)
}

#[tokio::test]
async fn rollout_hardens_hosts_reverts_a_broken_one_and_honours_check_and_canary() {
    let fleet = fleet(2, "rollout").await;
    put_skills(&fleet, false);
    let bundle = bundle(&fleet).await;
    let rules: Vec<&str> = bundle.sections.iter().map(|s| s.rule.as_str()).collect();
    assert_eq!(rules.len(), 3, "{rules:?}");

    let tag = &fleet.db.schema[2..14];
    let set = SshHosts::start(tag, &image(), &["web1", "web2", "fragile", "canary"]);
    // The operator's revert, run on the agent's host (like virsh).
    let revert = |name: &str| {
        let host = set.host(name);
        host.exec("touch /etc/fleet-fragile && cp -a /etc/shadow /root/shadow.orig");
        format!(
            "revert = [\"docker\", \"exec\", \"{}\", \"cp\", \"-a\", \"/root/shadow.orig\", \"/etc/shadow\"]\nlabels = {{ role = \"fragile\" }}",
            host.container
        )
    };
    let fragile = set.host("fragile");
    let (revert_fragile, revert_canary) = (revert("fragile"), revert("canary"));
    let inventory = set.inventory(
        "inventory.toml",
        &[
            set.entry("web1", "labels = { role = \"web\" }"),
            set.entry("web2", "labels = { role = \"web\" }"),
            set.entry("fragile", &revert_fragile),
        ],
    );

    // --check: scans, says what it would apply, changes nothing.
    let hosts3 = &set.hosts[..3];
    let before: Vec<String> = hosts3.iter().map(|h| h.checksums(TOUCHED)).collect();
    let (ok, _, err) = harden(&fleet, &inventory, &["--check", "--concurrency", "3"]);
    assert!(ok, "check failed: {err}");
    let checked = hosts(&fleet, run_of(&err)).await;
    for h in hosts3 {
        let r = row(&checked, &h.name);
        let report = r.report.as_ref().expect("check report");
        assert!(report.check_only && report.sections.is_empty(), "{r:?}");
        assert_eq!(report.would_apply.len(), 3, "{r:?}");
    }
    let after: Vec<String> = hosts3.iter().map(|h| h.checksums(TOUCHED)).collect();
    assert_eq!(before, after, "--check changed a host");

    // The rollout: web1 and web2 hardened, fragile reverted and escalated.
    let (ok, out, err) = harden(
        &fleet,
        &inventory,
        &["--concurrency", "2", "--max-fail-percent", "50"],
    );
    assert!(!ok, "a host was escalated, so harden must fail: {out}{err}");
    assert!(err.contains("1 of 3 host(s) not hardened"), "{err}");
    let run = run_of(&err);
    let rows = hosts(&fleet, run).await;
    for name in ["web1", "web2"] {
        let r = row(&rows, name);
        assert_eq!(r.outcome, "fixed", "{r:?}");
        let report = r.report.as_ref().unwrap();
        assert_eq!(report.sections.len(), 3, "{report:?}");
        // A fresh scan by the test agrees with the fleet's after-scan.
        let all: Vec<(String, String)> = set.host(name).oscap(DATASTREAM, PROFILE, PREFIX, &[]);
        let passing: Vec<String> = all
            .iter()
            .filter(|(_, s)| s == "pass")
            .map(|(r, _)| r.clone())
            .collect();
        let mut passing = passing;
        passing.sort();
        assert_eq!(
            passing, report.passing_after,
            "{name}: the test's scan and the fleet's differ"
        );
        for rule in &rules {
            assert!(
                report.passing_after.iter().any(|p| p == rule),
                "{name}: {rule} not passing"
            );
            assert!(
                !report.passing_before.iter().any(|p| p == rule),
                "{name}: {rule} passed before"
            );
        }
    }
    let f = row(&rows, "fragile");
    assert_eq!(
        (f.outcome.as_str(), f.reason.as_deref()),
        ("escalated", Some("health")),
        "{f:?}"
    );
    assert_eq!(f.labels.get("role").map(String::as_str), Some("fragile"));
    let report = f.report.as_ref().unwrap();
    assert_eq!(
        report.health_failed.as_deref(),
        Some("package_audit_installed"),
        "{report:?}"
    );
    assert_eq!(report.reverted, Some(true), "{report:?}");
    assert_eq!(
        fragile
            .exec("cmp /etc/shadow /root/shadow.orig && echo same")
            .trim(),
        "same",
        "the revert command did not restore the host"
    );
    assert!(
        out.contains("health failed after package_audit_installed"),
        "{out}"
    );
    // What still fails is listed per host, and one command learns it.
    let mut failing: Vec<String> = ["web1", "web2"]
        .iter()
        .flat_map(|h| row(&rows, h).report.as_ref().unwrap().failing_after.clone())
        .collect();
    failing.sort();
    failing.dedup();
    assert!(
        !failing.is_empty(),
        "the containers fail some rules of the profile"
    );
    assert!(out.contains("still failing:"), "{out}");
    let (ok, learn, err) = fleet.cli(&[
        "submit",
        "--skill-pack",
        PACK,
        "--failing-from",
        &run.to_string(),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let learn: i64 = learn.trim().parse().expect("a run id");
    let mut submitted: Vec<String> =
        sqlx::query_scalar("SELECT rule_id FROM work_items WHERE run_id = $1")
            .bind(learn)
            .fetch_all(&fleet.db.pool)
            .await
            .unwrap();
    submitted.sort();
    assert_eq!(
        submitted, failing,
        "the learning run covers what still fails"
    );

    // --check on a hardened host: nothing would be applied.
    let web1_only = set.inventory("web1.toml", &[set.entry("web1", "")]);
    let (ok, _, err) = harden(&fleet, &web1_only, &["--check"]);
    assert!(ok, "{err}");
    let checked = hosts(&fleet, run_of(&err)).await;
    let report = checked[0].report.as_ref().unwrap();
    assert!(report.would_apply.is_empty(), "{report:?}");

    // A failing canary stops the rollout: web2 is never leased.
    let canary = set.inventory(
        "canary.toml",
        &[set.entry("canary", &revert_canary), set.entry("web2", "")],
    );
    let (ok, _, err) = harden(&fleet, &canary, &["--canary", "1", "--concurrency", "2"]);
    assert!(!ok);
    let run = run_of(&err);
    let rows = hosts(&fleet, run).await;
    assert_eq!(row(&rows, "canary").reason.as_deref(), Some("health"));
    let w = row(&rows, "web2");
    assert_eq!(
        (w.outcome.as_str(), w.reason.as_deref()),
        ("escalated", Some("not_started")),
        "{w:?}"
    );
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_events e JOIN work_items w ON w.id = e.work_item_id
         WHERE w.run_id = $1 AND w.rule_id = 'web2'",
    )
    .bind(run.0)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(leased, 0, "web2 was touched after the canary failed");
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_killed_agent_mid_host_is_replaced_without_reapplying_passing_rules() {
    let mut fleet = fleet(2, "sigkill").await;
    put_skills(&fleet, true);
    let bundle = bundle(&fleet).await;
    let tag = &fleet.db.schema[2..14];
    let set = SshHosts::start(tag, &image(), &["solo"]);
    let inventory = set.inventory("inventory.toml", &[set.entry("solo", "")]);
    let path = inventory.clone();
    let (cli_api, cli_token) = (fleet.api.clone(), fleet.api_token.clone());
    let cli = tokio::task::spawn_blocking(move || {
        std::process::Command::new(fleet_tests::procs::bin("fleet-coordinator"))
            .args([
                "harden",
                "--inventory",
                path.to_str().unwrap(),
                "--skill-pack",
                PACK,
            ])
            .env("FLEET_API_URL", cli_api)
            .env("FLEET_API_TOKEN", cli_token)
            .output()
            .expect("harden runs")
    });

    // Wait for the first section, then SIGKILL whoever holds the host.
    let start = std::time::Instant::now();
    let (holder, epoch) = loop {
        let found: Option<(String, i64)> = sqlx::query_as(
            "SELECT agent_id, epoch FROM run_events WHERE kind = 'section_applied' ORDER BY ts LIMIT 1",
        )
        .fetch_optional(&fleet.db.pool)
        .await
        .unwrap();
        if let Some(f) = found {
            break f;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no section applied; see {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let i = (0..2)
        .find(|i| fleet.agent_id(*i) == holder)
        .expect("holder is one of ours");
    fleet.agents[i].take().expect("agent running").kill().await;
    eprintln!("killed {holder} holding epoch {epoch}");

    let out = cli.await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rows = hosts(&fleet, run_of(&err)).await;
    let report = rows[0].report.as_ref().expect("report");
    let first = &bundle.sections[0].rule;
    // The next holder re-scanned: the first rule already passed there.
    assert!(report.skipped_passing.contains(first), "{report:?}");
    assert!(
        !report.sections.iter().any(|s| &s.rule == first),
        "{report:?}"
    );
    // No rule got its section twice across both holders.
    let applied: Vec<String> = sqlx::query_scalar(
        "SELECT body -> 'section' ->> 'rule' FROM run_events WHERE kind = 'section_applied'",
    )
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    let mut unique = applied.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        applied.len(),
        unique.len(),
        "a section ran twice: {applied:?}"
    );
    for s in &bundle.sections {
        assert!(
            report.passing_after.contains(&s.rule),
            "{} not passing: {report:?}",
            s.rule
        );
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn bad_inventories_give_a_clear_error_and_touch_no_host() {
    let fleet = fleet(1, "bad").await;
    put_skills(&fleet, false);
    let tag = &fleet.db.schema[2..14];
    let set = SshHosts::start(tag, &image(), &["h1"]);
    let h1 = set.host("h1");
    let before = h1.checksums(TOUCHED);
    let other_key = fleet_tests::ssh_hosts::keygen(&set.dir.path().join("other"));
    let other_key: String = other_key
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let cases = [
        (
            "missing key file",
            set.entry("h1", "key = \"/nonexistent/key\""),
            "cannot be read",
        ),
        (
            "unknown field",
            set.entry("h1", "colour = \"red\""),
            "colour",
        ),
        (
            "duplicate host",
            format!("{}{}", set.entry("h1", ""), set.entry("h1", "")),
            "duplicate host name",
        ),
        (
            "unreachable host",
            set.entry("h1", "")
                .replace(&h1.container, "no-such-host.invalid"),
            "unreachable",
        ),
        (
            "wrong host key",
            set.entry("h1", "").replace(&h1.host_key, &other_key),
            "does not match host_key",
        ),
    ];
    for (what, entry, expect) in cases {
        let inv = set.inventory("bad.toml", &[entry]);
        let (ok, _, err) = harden(&fleet, &inv, &[]);
        assert!(!ok, "{what}: accepted");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            err.contains("no host was touched") || err.contains("nothing was run"),
            "{what}: {err}"
        );
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "a bad inventory submitted a run");
    assert_eq!(before, h1.checksums(TOUCHED));
    run(&["docker", "exec", &h1.container, "true"], None);
    fleet.shutdown().await;
}
