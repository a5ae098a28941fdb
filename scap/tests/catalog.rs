//! The catalog against the installed SSG datastreams, with `oscap` itself as
//! the judge of which rules a profile selects.

mod support;

use fleet_scap::{Catalog, Evaluation, RuleStatus, Severity};
use support::{datastream, oscap, timed, STANDARD, STIG};

/// The rule ids oscap evaluates for `profile`: an evaluation with results
/// lists every rule of the benchmark, and exactly the unselected ones come
/// out `notselected` (the others are at least `notapplicable` on a host of
/// another OS). Read-only on the host; about 1 s for Debian 11, 5 s for
/// RHEL 9 with `--skip-valid`.
fn oscap_selected(ds: &std::path::Path, profile: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.xml");
    oscap(
        &[
            "xccdf",
            "eval",
            "--skip-valid",
            "--profile",
            profile,
            "--results",
            results.to_str().unwrap(),
            ds.to_str().unwrap(),
        ],
        &[],
    );
    let evaluation = Evaluation::load(&results).unwrap();
    evaluation
        .rules()
        .iter()
        .filter(|r| r.status != RuleStatus::NotSelected)
        .map(|r| r.rule_id.clone())
        .collect()
}

fn assert_matches_oscap(ds_name: &str, profile: &str) -> Catalog {
    let ds = datastream(ds_name);
    let catalog = timed(&format!("parse {ds_name}"), || Catalog::load(&ds).unwrap());
    let ours: Vec<String> = catalog
        .rules_of(profile)
        .unwrap()
        .iter()
        .map(|r| r.id.clone())
        .collect();
    let mut theirs = oscap_selected(&ds, profile);
    eprintln!(
        "{ds_name} {profile}: catalog {} rules, oscap {}",
        ours.len(),
        theirs.len()
    );
    let mut sorted = ours.clone();
    sorted.sort();
    theirs.sort();
    assert_eq!(
        sorted, theirs,
        "{ds_name} {profile}: selection differs from oscap's"
    );
    assert!(!ours.is_empty());
    catalog
}

#[test]
fn debian11_standard_selects_what_oscap_selects() {
    let catalog = assert_matches_oscap("ssg-debian11-ds.xml", STANDARD);
    assert_eq!(
        catalog.benchmark_id(),
        "xccdf_org.ssgproject.content_benchmark_DEBIAN-11"
    );
    // the short profile id names the same profile
    assert_eq!(
        catalog.rules_of("standard").unwrap().len(),
        catalog.rules_of(STANDARD).unwrap().len()
    );
    let standard = catalog.profile("standard").unwrap();
    assert!(!standard.title.is_empty());
}

#[test]
fn rhel9_stig_selects_what_oscap_selects() {
    let catalog = assert_matches_oscap("ssg-rhel9-ds.xml", STIG);
    // stig selects hundreds of rules out of about 1350
    assert!(catalog.rules_of(STIG).unwrap().len() > 300);
    assert!(catalog.rules().len() > 1000);
}

#[test]
fn debian11_rules_have_readable_fields() {
    let catalog = Catalog::load(datastream("ssg-debian11-ds.xml")).unwrap();
    let audit = catalog
        .rule("package_audit_installed")
        .expect("package_audit_installed");
    assert_eq!(
        audit.id,
        "xccdf_org.ssgproject.content_rule_package_audit_installed"
    );
    assert_eq!(audit.title, "Ensure the audit Subsystem is Installed");
    assert_eq!(audit.severity, Severity::Medium);
    // SSG 0.1.65 ships only ansible, puppet and blueprint fixes for it
    assert!(!audit.has_bash_fix);
    for short in [
        "ensure_logrotate_activated",
        "sshd_disable_root_login",
        "package_telnetd_removed",
    ] {
        assert!(
            catalog.rule(short).unwrap().has_bash_fix,
            "{short} has a bash fix"
        );
    }
    assert!(audit
        .rationale
        .starts_with("The auditd service is an access monitoring"));
    let oval: Vec<_> = audit.oval_checks().collect();
    assert_eq!(oval.len(), 1);
    assert_eq!(
        oval[0].name.as_deref(),
        Some("oval:ssg-package_audit_installed:def:1")
    );

    for short in [
        "sshd_disable_root_login",
        "ensure_logrotate_activated",
        "partition_for_tmp",
    ] {
        let rule = catalog.rule(short).unwrap_or_else(|| panic!("{short}"));
        assert!(!rule.title.is_empty(), "{short}: empty title");
        assert!(!rule.description.is_empty(), "{short}: empty description");
        for text in [&rule.title, &rule.description, &rule.rationale] {
            assert!(
                !text.contains('<') || !text.contains("</"),
                "{short}: markup left in {text:?}"
            );
            assert!(
                !text.contains("  ") && !text.contains('\n'),
                "{short}: whitespace not collapsed"
            );
        }
        assert_ne!(rule.severity, Severity::Unknown, "{short}");
    }
    // XHTML code and substituted values survive as text
    let root_login = catalog.rule("sshd_disable_root_login").unwrap();
    assert!(
        root_login.description.contains("PermitRootLogin no"),
        "{}",
        root_login.description
    );
    assert!(!root_login.description.contains("html:"));
    // every rule's prose is free of tags
    for rule in catalog.rules() {
        assert!(
            !rule.description.contains("<html:") && !rule.description.contains("<xccdf"),
            "{}: {}",
            rule.short_id,
            rule.description
        );
    }
}
