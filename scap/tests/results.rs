//! Results of real `oscap xccdf eval --results-arf` runs against the Debian
//! 11 datastream. The host need not be Debian 11: each test builds a small
//! fake root in a tempdir and points oscap's probes at it with
//! `OSCAP_PROBE_ROOT` (offline mode, as `oscap-chroot` does). The debian11
//! platform check reads `/etc/debian_version` (`^11.[0-9]+$`), so a root
//! without it makes every rule `notapplicable`.

mod support;

use std::path::Path;
use std::sync::OnceLock;

use fleet_scap::results::CriteriaNode;
use fleet_scap::{Evaluation, RuleStatus, ScapError};
use support::{datastream, oscap, timed, STANDARD};

const RULE_PREFIX: &str = "xccdf_org.ssgproject.content_rule_";

/// Writes `files` (path relative to the root, content) under `root`.
fn fake_root(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// ARF text of evaluating `rules` of the `standard` profile with the probes
/// on `root`.
fn evaluate(root: &Path, rules: &[&str]) -> String {
    let out = tempfile::tempdir().unwrap();
    let arf = out.path().join("arf.xml");
    let ds = datastream("ssg-debian11-ds.xml");
    let rule_ids: Vec<String> = rules.iter().map(|r| format!("{RULE_PREFIX}{r}")).collect();
    let mut args = vec!["xccdf", "eval", "--skip-valid", "--profile", STANDARD];
    for id in &rule_ids {
        args.extend(["--rule", id.as_str()]);
    }
    args.extend(["--results-arf", arf.to_str().unwrap(), ds.to_str().unwrap()]);
    oscap(&args, &[("OSCAP_PROBE_ROOT", root)]);
    std::fs::read_to_string(arf).unwrap()
}

/// A Debian 11 root where auditd is not installed (empty dpkg status) and
/// logrotate rotates weekly: both rules fail.
fn failing_arf() -> &'static str {
    static ARF: OnceLock<String> = OnceLock::new();
    ARF.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        fake_root(
            root.path(),
            &[
                ("etc/debian_version", "11.7\n"),
                ("etc/logrotate.conf", "weekly\nrotate 4\n"),
                ("var/lib/dpkg/status", ""),
            ],
        );
        evaluate(
            root.path(),
            &["package_audit_installed", "ensure_logrotate_activated"],
        )
    })
}

#[test]
fn failing_rules_carry_what_the_check_looked_at() {
    let arf = failing_arf();
    let evaluation = timed(&format!("parse ARF of {} bytes", arf.len()), || {
        Evaluation::parse(arf).unwrap()
    });
    assert_eq!(evaluation.profile_id.as_deref(), Some(STANDARD));
    assert_eq!(
        evaluation.evaluated().count(),
        2,
        "only the two --rule rules run"
    );
    assert!(
        evaluation.rules().len() > 300,
        "every other rule is listed as notselected"
    );
    assert!(evaluation
        .rules()
        .iter()
        .filter(
            |r| !["package_audit_installed", "ensure_logrotate_activated"]
                .contains(&r.short_id.as_str())
        )
        .all(|r| r.status == RuleStatus::NotSelected));

    let audit = evaluation.rule("package_audit_installed").unwrap();
    assert_eq!(audit.status, RuleStatus::Fail);
    assert_eq!(audit.details.len(), 1);
    assert_eq!(
        audit.details[0].definition_id,
        "oval:ssg-package_audit_installed:def:1"
    );
    assert_eq!(audit.details[0].result, "false");
    let text = audit.details_text(8 * 1024);
    eprintln!("{text}");
    assert!(text.starts_with("rule package_audit_installed: fail\n"));
    assert!(text.contains("dpkginfo_object"), "{text}");
    assert!(
        text.contains("name=\"auditd\""),
        "the object names the package: {text}"
    );
    assert!(text.contains("[does not exist]"), "{text}");

    let logrotate = evaluation.rule("ensure_logrotate_activated").unwrap();
    assert_eq!(logrotate.status, RuleStatus::Fail);
    let text = logrotate.details_text(8 * 1024);
    eprintln!("{text}");
    // the item oscap found: the file and the offending line
    assert!(text.contains("textfilecontent_item"), "{text}");
    assert!(text.contains("filepath=\"/etc/logrotate.conf\""), "{text}");
    assert!(text.contains("text=\"weekly\""), "{text}");
    assert!(
        text.contains("Check if daily is set in /etc/logrotate.conf"),
        "criterion comments: {text}"
    );
    let items = failing_items(logrotate.details[0].criteria.as_ref().unwrap());
    assert!(
        items.contains(&"/etc/logrotate.conf".to_owned()),
        "{items:?}"
    );

    // the cap holds on a char boundary and says it cut
    for cap in [0, 1, 40, 200, 1000] {
        let capped = logrotate.details_text(cap);
        assert!(capped.len() <= cap, "{cap}: {}", capped.len());
    }
    assert!(logrotate.details_text(200).ends_with("[truncated]\n"));
}

/// Filepaths of the items under criteria that did not come out true.
fn failing_items(node: &CriteriaNode) -> Vec<String> {
    match node {
        CriteriaNode::Criteria { children, .. } => {
            children.iter().flat_map(failing_items).collect()
        }
        CriteriaNode::ExtendDefinition { criteria, .. } => {
            criteria.iter().flat_map(|c| failing_items(c)).collect()
        }
        CriteriaNode::Criterion { test, .. } => test
            .iter()
            .flat_map(|t| &t.object)
            .flat_map(|o| &o.items)
            .flat_map(|i| &i.fields)
            .filter(|f| f.name == "filepath")
            .map(|f| f.value.clone())
            .collect(),
    }
}

#[test]
fn passing_and_not_applicable_rules_map_to_their_status() {
    let rules = ["ensure_logrotate_activated", "package_telnetd_removed"];
    let compliant = tempfile::tempdir().unwrap();
    fake_root(
        compliant.path(),
        &[
            ("etc/debian_version", "11.7\n"),
            ("etc/logrotate.conf", "daily\nrotate 4\n"),
            (
                "etc/cron.daily/logrotate",
                "#!/bin/sh\n/usr/sbin/logrotate /etc/logrotate.conf\n",
            ),
            ("var/lib/dpkg/status", ""),
        ],
    );
    let evaluation = Evaluation::parse(&evaluate(compliant.path(), &rules)).unwrap();
    for rule in rules {
        let result = evaluation.rule(rule).unwrap();
        assert_eq!(result.status, RuleStatus::Pass, "{rule}");
        assert!(result.status.is_compliant());
        assert!(
            result.details.is_empty(),
            "{rule}: a pass carries no details"
        );
        assert_eq!(result.details_text(8192), format!("rule {rule}: pass\n"));
    }

    // no /etc/debian_version: the platform check fails before any rule runs
    let elsewhere = tempfile::tempdir().unwrap();
    let evaluation = Evaluation::parse(&evaluate(elsewhere.path(), &rules)).unwrap();
    for rule in rules {
        assert_eq!(
            evaluation.rule(rule).unwrap().status,
            RuleStatus::NotApplicable,
            "{rule}"
        );
    }
}

#[test]
fn garbage_and_truncated_arf_is_an_error() {
    let arf = failing_arf();
    assert!(Evaluation::parse(arf).is_ok());
    let mut cases: Vec<String> = vec![
        String::new(),
        "garbage".to_owned(),
        arf[..arf.len() / 2].to_owned(),
        arf[..arf.len() - 100].to_owned(),
        arf.replacen("<TestResult", "<TestResult <", 1),
    ];
    // a deterministic mess of bytes
    let mut x: u32 = 0x2545_f491;
    let noise: String = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            char::from(b"<>/=\"'&;ax #!?[]"[(x % 16) as usize])
        })
        .collect();
    cases.push(noise);
    for case in &cases {
        assert!(
            Evaluation::parse(case).is_err(),
            "accepted {:?}…",
            &case[..case.len().min(60)]
        );
    }
    // well-formed, but no TestResult
    let start = arf.find("<arf:reports>").unwrap();
    let end = arf.find("</arf:reports>").unwrap() + "</arf:reports>".len();
    let without = format!("{}{}", &arf[..start], &arf[end..]);
    assert!(matches!(
        Evaluation::parse(&without),
        Err(ScapError::NoTestResult)
    ));
}
