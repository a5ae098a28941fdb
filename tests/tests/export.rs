//! The bundle (DESIGN H2) and its exports (H6) on real parts: skills are
//! committed onto the knowledge repo's `main` through the coordinator's
//! compare-and-swap path with the dream stage's trailers; the coordinator
//! binary builds the bundle of the real `ssg-debian11-standard` pack and
//! catalog; the CLI exports it; the bash script runs on a fresh Docker
//! target through its sandboxed exec, and the Ansible playbook is applied
//! to another by `ansible-playbook`. Fresh oscap scans on the targets show
//! the rules fail before and pass after. Docker, the target image, Redis,
//! Postgres and Ansible must be there: a missing one fails, never skips.
//!
//! The target image passes every `/etc` permission rule, so each target
//! first drifts: `/etc/gshadow` world-readable, as on a neglected host.

use std::path::Path;

use fleet_common::bundle::Bundle;
use fleet_knowledge::{commit_changes, DreamAction, DreamTrailers, MainTree};
use fleet_scap::RuleStatus;
use fleet_tests::export::{ansible_playbook, ExportTarget};
use fleet_tests::fleet::{Fleet, FleetOpts};

const PACK: &str = "ssg-debian11-standard";

/// Known-good skills (rule, script), each promoted with its own ledger
/// entry. The cron skill also writes a Jinja look-alike, which must reach
/// the host as text.
const GOOD: &[(&str, &str)] = &[
    (
        "package_cron_installed",
        "apt-get install -y -q cron\necho '{{ 7 * 6 }}' >/root/fleet-export-literal\n",
    ),
    (
        "package_rsyslog_installed",
        "apt-get install -y -q rsyslog\n",
    ),
    ("file_permissions_etc_gshadow", "chmod 0640 /etc/gshadow\n"),
];
/// Held by the pack until the package rules are done; its scan result is
/// `error` in a container (no systemd), so only its place is checked.
const HELD: (&str, &str) = (
    "service_cron_enabled",
    "mkdir -p /etc/systemd/system/multi-user.target.wants\n\
     ln -sf /lib/systemd/system/cron.service /etc/systemd/system/multi-user.target.wants/cron.service\n",
);
/// A section that fails: reported, and the others still apply.
const BROKEN: (&str, &str) = (
    "package_audit_installed",
    "echo 'audit refused on purpose' >&2\nexit 3\n",
);
/// Not in the standard profile: never in its bundle.
const OUTSIDE: (&str, &str) = ("accounts_tmout", "echo TMOUT=600 >>/etc/profile\n");

const DRIFT: &str = "chmod 0644 /etc/gshadow";

fn good_rules() -> Vec<&'static str> {
    GOOD.iter().map(|(r, _)| *r).collect()
}

/// A coordinator (no agents) whose `main` holds the skills above; returns
/// the commit that wrote each rule's skill.
async fn fleet_with_skills() -> (Fleet, Vec<(String, String)>) {
    let fleet = Fleet::start(FleetOpts {
        agents: 0,
        ..Default::default()
    })
    .await;
    let dir = fleet.knowledge_dir();
    let mut commits = Vec::new();
    let all = GOOD.iter().chain([&HELD, &BROKEN, &OUTSIDE]);
    for (i, (rule, script)) in all.enumerate() {
        let path = format!("skills/{rule}.sh");
        let subject = format!("dream: promote skill {rule}");
        // The gshadow skill came by hand: no trailers, no run or ledger.
        let message = if *rule == "file_permissions_etc_gshadow" {
            subject
        } else {
            DreamTrailers::new(DreamAction::Promote, 7, 100 + i as i64).message(&subject)
        };
        let done = commit_changes(&dir, &[(&path, Some(script.as_bytes()))], &message).unwrap();
        commits.push((rule.to_string(), done.after.to_string()));
    }
    (fleet, commits)
}

fn cli_ok(fleet: &Fleet, args: &[&str]) -> String {
    let (ok, stdout, stderr) = fleet.cli(args);
    assert!(ok, "fleet-coordinator {args:?} failed:\n{stderr}");
    stdout
}

fn bundle_of(fleet: &Fleet, out: &Path) -> (Bundle, Vec<u8>, String) {
    let out_s = out.to_str().unwrap();
    let table = cli_ok(fleet, &["bundle", "--skill-pack", PACK, "--out", out_s]);
    let bytes = std::fs::read(out).unwrap();
    (serde_json::from_slice(&bytes).unwrap(), bytes, table)
}

fn export(fleet: &Fleet, format: &str, out: &Path) -> String {
    let out_s = out.to_str().unwrap();
    cli_ok(
        fleet,
        &[
            "export",
            "--skill-pack",
            PACK,
            "--format",
            format,
            "--out",
            out_s,
        ],
    );
    std::fs::read_to_string(out).unwrap()
}

fn position(bundle: &Bundle, rule: &str) -> usize {
    bundle
        .sections
        .iter()
        .position(|s| s.rule == rule)
        .unwrap_or_else(|| panic!("{rule} not in the bundle"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_is_mains_skills_in_the_packs_order_with_provenance_and_the_same_bytes_twice() {
    let (fleet, commits) = fleet_with_skills().await;
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, first, table) = bundle_of(&fleet, &tmp.path().join("a.json"));
    let (_, second, _) = bundle_of(&fleet, &tmp.path().join("b.json"));
    assert_eq!(first, second, "the same main and pack give the same bytes");

    let main = fleet.knowledge_main();
    assert_eq!(bundle.skill_pack, PACK);
    assert_eq!(
        bundle.profile,
        "xccdf_org.ssgproject.content_profile_standard"
    );
    assert_eq!(bundle.main_commit, main);
    assert!(
        table.ends_with(&format!("bundle: skills=5 main={}\n", &main[..12])),
        "{table}"
    );
    assert!(bundle.section(OUTSIDE.0).is_none(), "not in the profile");
    assert_eq!(bundle.sections.len(), 5);

    // Order: the package family together, the held service rule after
    // every package rule.
    let packages: Vec<usize> = [
        "package_audit_installed",
        "package_cron_installed",
        "package_rsyslog_installed",
    ]
    .iter()
    .map(|r| position(&bundle, r))
    .collect();
    let (lo, hi) = (
        *packages.iter().min().unwrap(),
        *packages.iter().max().unwrap(),
    );
    assert_eq!(
        hi - lo,
        2,
        "the package family stays together: {packages:?}"
    );
    assert!(position(&bundle, HELD.0) > hi, "service after the packages");
    let order: Vec<&str> = bundle.sections.iter().map(|s| s.rule.as_str()).collect();
    assert_eq!(
        order,
        [
            "package_audit_installed",
            "package_rsyslog_installed",
            "package_cron_installed",
            "file_permissions_etc_gshadow",
            "service_cron_enabled",
        ],
        "the catalog's order within those constraints"
    );

    // Provenance: the commit that wrote each, its blob, run and ledger.
    let tree = MainTree::open(&fleet.knowledge_dir()).unwrap();
    for (rule, commit) in commits.iter().filter(|(r, _)| r != OUTSIDE.0) {
        let s = bundle.section(rule).unwrap();
        assert_eq!(&s.provenance.commit, commit, "{rule}");
        let blob = tree.blob_id(&format!("skills/{rule}.sh")).unwrap().unwrap();
        assert_eq!(s.provenance.blob, blob, "{rule}");
        assert!(!s.title.is_empty(), "{rule}: title from the catalog");
        assert!(table.contains(rule.as_str()), "{table}");
    }
    let cron = bundle.section("package_cron_installed").unwrap();
    assert_eq!(cron.title, "Install the cron service");
    assert_eq!(
        (cron.provenance.run, cron.provenance.ledger),
        (Some(7), Some(100))
    );
    let gshadow = bundle.section("file_permissions_etc_gshadow").unwrap();
    assert_eq!(
        (gshadow.provenance.run, gshadow.provenance.ledger),
        (None, None)
    );

    // Exports are as deterministic as the bundle.
    let bash = export(&fleet, "bash", &tmp.path().join("a.sh"));
    assert_eq!(bash, export(&fleet, "bash", &tmp.path().join("b.sh")));
    assert!(bash.contains(&format!("# main commit:  {main}\n")));
    let (ok, stdout, _) = fleet.cli(&["export", "--skill-pack", PACK, "--format", "ansible"]);
    assert!(ok);
    assert_eq!(stdout, export(&fleet, "ansible", &tmp.path().join("a.yml")));

    // The route takes the API token, and says what it needs.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/bundle?skill_pack={PACK}", fleet.api);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let bad = http
        .get(format!("{}/api/v1/bundle", fleet.api))
        .bearer_auth(&fleet.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("skill_pack"));
    let (ok, _, stderr) = fleet.cli(&["bundle", "--skill-pack", "no-such-pack"]);
    assert!(!ok && stderr.contains("unknown skill pack"), "{stderr}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bash_export_fixes_the_rules_on_a_fresh_target_and_reports_the_failing_section() {
    let (fleet, _) = fleet_with_skills().await;
    let tmp = tempfile::tempdir().unwrap();
    let script = export(&fleet, "bash", &tmp.path().join("bundle.sh"));
    fleet.shutdown().await;

    let target = ExportTarget::start("bash").await;
    assert_eq!(target.exec(DRIFT).await.exit_code, Some(0));
    let rules = good_rules();
    let before = target.scan(&rules).await;
    for r in &rules {
        assert_eq!(before[*r], RuleStatus::Fail, "{r} before: {before:?}");
    }
    let out = target.exec(&script).await;
    assert_eq!(
        out.exit_code,
        Some(1),
        "one section failed:\n{}",
        out.output
    );
    assert!(
        out.output
            .contains("fleet-export: section package_audit_installed FAILED (exit 3)"),
        "{}",
        out.output
    );
    assert!(out.output.contains("audit refused on purpose"));
    assert!(
        out.output
            .contains("fleet-export: 1 of 5 sections failed: package_audit_installed"),
        "{}",
        out.output
    );
    let after = target.scan(&rules).await;
    for r in &rules {
        assert_eq!(after[*r], RuleStatus::Pass, "{r} after: {after:?}");
    }
    let literal = target.exec("cat /root/fleet-export-literal").await;
    assert_eq!(literal.output, "{{ 7 * 6 }}\n");
    target.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ansible_export_passes_syntax_check_and_fixes_the_rules_on_a_fresh_target() {
    let (fleet, _) = fleet_with_skills().await;
    let tmp = tempfile::tempdir().unwrap();
    let playbook = tmp.path().join("bundle.yml");
    export(&fleet, "ansible", &playbook);
    fleet.shutdown().await;
    let playbook = playbook.to_str().unwrap();

    let target = ExportTarget::start("ansible").await;
    let check = ansible_playbook(
        tmp.path(),
        target.container(),
        &["--syntax-check", playbook],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    assert_eq!(target.exec(DRIFT).await.exit_code, Some(0));
    let rules = good_rules();
    let before = target.scan(&rules).await;
    for r in &rules {
        assert_eq!(before[*r], RuleStatus::Fail, "{r} before: {before:?}");
    }
    // The failing section fails the host's play: ansible-playbook says so
    // and exits non-zero.
    let failed = ansible_playbook(tmp.path(), target.container(), &[playbook]);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success(), "{stdout}");
    assert!(stdout.contains("audit refused on purpose"), "{stdout}");
    assert!(stdout.contains("failed=1"), "{stdout}");
    // Skipping it by its tag applies the rest.
    let applied = ansible_playbook(
        tmp.path(),
        target.container(),
        &["--skip-tags", BROKEN.0, playbook],
    );
    let stdout = String::from_utf8_lossy(&applied.stdout);
    assert!(
        applied.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert!(
        stdout.contains("TASK [package_cron_installed: Install the cron service]"),
        "{stdout}"
    );
    let after = target.scan(&rules).await;
    for r in &rules {
        assert_eq!(after[*r], RuleStatus::Pass, "{r} after: {after:?}");
    }
    let literal = target.exec("cat /root/fleet-export-literal").await;
    assert_eq!(
        literal.output, "{{ 7 * 6 }}\n",
        "Ansible templated a script"
    );
    target.remove().await;
}
