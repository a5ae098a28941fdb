use std::collections::BTreeMap;

use fleet_common::api::{FixSource, PointComparison, RuleChange, RuleReport, RunPoint, RunStatus};
use fleet_common::RunId;

use super::*;

const HOSTILE: &str = "<script>alert(1)</script>";
const QUOTES: &str = "rule\"onmouseover='x'";

fn rule(
    id: &str,
    family: &str,
    outcome: RuleOutcome,
    reason: Option<&str>,
    attempts: Option<u32>,
    wall_ms: Option<u64>,
) -> RuleReport {
    RuleReport {
        rule: id.into(),
        family: family.into(),
        outcome,
        reason: reason.map(str::to_owned),
        attempts,
        wall_ms,
        fixed_attempt: (outcome == RuleOutcome::Fixed).then_some(attempts.unwrap_or(1)),
        fixed_by: (outcome == RuleOutcome::Fixed).then(|| {
            if attempts == Some(1) {
                FixSource::Skill
            } else {
                FixSource::Brain
            }
        }),
    }
}

fn rules() -> Vec<RuleReport> {
    use RuleOutcome::*;
    vec![
        rule("sshd_a", "sshd", Fixed, None, Some(1), Some(1_000)),
        rule("sshd_b", "sshd", Fixed, None, Some(2), Some(3_000)),
        rule("sshd_c", "sshd", Escalated, Some("lease_lost"), None, None),
        rule(
            "audit_rules_dac_modification_chmod",
            "audit_rules_dac_modification",
            Escalated,
            Some("attempt_budget"),
            Some(3),
            Some(6_000),
        ),
        rule(
            "file_permissions_etc_shadow",
            "file_permissions",
            Escalated,
            Some("health"),
            Some(1),
            Some(2_000),
        ),
        rule(
            "accounts_password_pam_minlen",
            "accounts_password_pam",
            AlreadyPassing,
            None,
            Some(0),
            Some(400),
        ),
        rule(HOSTILE, "<b>family</b>", Fixed, None, Some(1), Some(700)),
        rule(
            QUOTES,
            "q&a",
            Escalated,
            Some("<img src=x>"),
            Some(2),
            Some(900),
        ),
        rule("grub2_audit_argument", "grub2", Pending, None, None, None),
        rule(
            "sysctl_kernel_randomize_va_space",
            "sysctl",
            NeedsTarget,
            Some("vm"),
            Some(0),
            None,
        ),
    ]
}

fn report(comparison: Option<RunComparison>) -> RunReport {
    let rules = rules();
    let count = |o: RuleOutcome| rules.iter().filter(|r| r.outcome == o).count() as u64;
    let means = fleet_common::api::RunMeans::of(&rules);
    let status = RunStatus {
        run: RunId(12),
        skill_pack: "sim-demo".into(),
        profile: "standard".into(),
        status: "completed".into(),
        total: rules.len() as u64,
        finished: rules.len() as u64 - 1,
        fixed: count(RuleOutcome::Fixed),
        fixed_first_try: 2,
        already_passing: count(RuleOutcome::AlreadyPassing),
        escalated: count(RuleOutcome::Escalated),
        escalated_by_reason: BTreeMap::from([
            ("attempt_budget".into(), 1),
            ("health".into(), 1),
            ("lease_lost".into(), 1),
            ("<x>".into(), 1),
        ]),
        needs_target: count(RuleOutcome::NeedsTarget),
        needs_target_by_class: BTreeMap::from([(
            "vm".into(),
            fleet_common::api::TargetNeed {
                rules: 1,
                examples: vec!["sysctl_kernel_randomize_va_space".into()],
            },
        )]),
        lease_losses: 1,
        stale_completions_rejected: 0,
        created_at: "2026-11-22T01:00:00+00:00".into(),
        finished_at: Some("2026-11-22T01:04:05+00:00".into()),
        mean_attempts: means.mean_attempts,
        wall_ms_per_fixed: means.wall_ms_per_fixed,
        wall_ms_per_escalated: means.wall_ms_per_escalated,
        comparison,
        dream: Some("done".into()),
        kind: "learn".into(),
        bundle: None,
    };
    RunReport::new(status, rules)
}

fn comparison() -> RunComparison {
    RunComparison {
        previous_run: RunId(11),
        wins: 2,
        regressions: 1,
        fix_rate: Some(3.0 / 7.0),
        previous_fix_rate: Some(2.0 / 7.0),
        first_try_rate: Some(2.0 / 3.0),
        previous_first_try_rate: Some(0.5),
        changes: vec![
            RuleChange {
                rule: HOSTILE.into(),
                change: "win".into(),
                lessons_shown: vec!["lesson-<1>".into(), "sshd-idle\"2".into()],
            },
            RuleChange {
                rule: "sshd_b".into(),
                change: "win".into(),
                lessons_shown: vec![],
            },
            RuleChange {
                rule: "sshd_c".into(),
                change: "regression".into(),
                lessons_shown: vec!["grub2-lesson".into()],
            },
        ],
        not_comparable: [("llm_unavailable".into(), 3)].into(),
        previous_not_comparable: 1,
        revert_withheld: Some("3 of this run's 7 rules (43 %) were not comparable".into()),
    }
}

fn point(run: i64, fix_rate: Option<f64>, c: Option<(u64, u64)>) -> RunPoint {
    RunPoint {
        run: RunId(run),
        status: "completed".into(),
        created_at: "2026-11-22T00:00:00+00:00".into(),
        finished_at: None,
        fixed: 3,
        fixed_first_try: 2,
        escalated: 4,
        already_passing: 1,
        fix_rate,
        first_try_rate: fix_rate.map(|r| r * 0.8),
        comparison: c.map(|(wins, regressions)| PointComparison {
            previous_run: RunId(run - 1),
            wins,
            regressions,
        }),
    }
}

fn history() -> RunHistory {
    RunHistory {
        run: RunId(12),
        skill_pack: "sim-demo".into(),
        profile: "standard".into(),
        runs: vec![
            point(3, Some(0.2), None),
            point(5, Some(0.35), Some((3, 1))),
            point(7, Some(0.3), Some((1, 2))),
            point(8, None, Some((0, 0))),
            point(9, Some(0.5), Some((4, 0))),
            point(11, Some(2.0 / 7.0), Some((1, 3))),
            point(12, Some(3.0 / 7.0), Some((2, 1))),
        ],
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Opening and closing tags balance.
fn assert_balanced(page: &str) {
    for tag in [
        "svg", "table", "thead", "tbody", "tr", "td", "th", "text", "title", "p", "div", "code",
        "html", "head", "body", "main", "style", "h1", "h2", "rect",
    ] {
        let open = count(page, &format!("<{tag}>")) + count(page, &format!("<{tag} "));
        let close = count(page, &format!("</{tag}>"));
        let selfclosed = if tag == "rect" {
            // `<rect .../>` closes itself; `<rect ...><title>…</title></rect>` does not.
            page.split("<rect ")
                .skip(1)
                .filter(|s| s.split('>').next().unwrap_or("").ends_with('/'))
                .count()
        } else {
            0
        };
        assert_eq!(open, close + selfclosed, "<{tag}> unbalanced");
    }
}

#[test]
fn the_page_has_every_rule_the_totals_and_three_charts() {
    let page = render(&report(Some(comparison())), &history(), &[]);
    for r in rules() {
        assert!(
            page.contains(&format!("<code>{}</code>", esc(&r.rule))),
            "no row for {}",
            r.rule
        );
    }
    assert_eq!(
        count(&page, "<tr><td><code>"),
        rules().len() + comparison().changes.len()
    );
    assert!(page.starts_with("<!DOCTYPE html>"));
    // Totals: 3 fixed of 3 + 4 = 7 attempted.
    assert!(page.contains("42.9%"), "fix rate");
    assert!(page.contains("3 fixed of 7 fixed or escalated"));
    assert!(page.contains("66.7%"), "first-try rate");
    assert!(page.contains("wall time per fixed"));
    // Where each fix came from: sshd_a replayed its skill, sshd_b the brain.
    assert!(page.contains("<th>fixed by</th>"));
    assert!(page.contains("<td class=\"n\">1</td><td>skill</td>"));
    assert!(page.contains("<td class=\"n\">2</td><td>brain</td>"));
    assert!(page.contains("1.67"), "mean attempts 10/6");
    // The charts.
    assert_eq!(count(&page, "<svg "), 3);
    assert_eq!(count(&page, "</svg>"), 3);
    assert!(page.contains("run 9: win:regression ratio ∞ (4 wins, 0 regressions against run 8)"));
    assert!(page.contains("12 (this)"));
    assert!(page.contains("sshd: 2 fixed"));
    assert!(page.contains("sshd: 1 escalated"));
    assert!(page.contains("2 fixed after 1 attempt(s)"));
    assert!(page.contains("1 escalated rule(s) dead-lettered"));
    // A rule no agent could serve: its own card and bar, no escalation.
    assert!(page.contains("needs a vm target"));
    assert!(page.contains("never leased nor escalated: sysctl_kernel_randomize_va_space"));
    assert!(page.contains("1 need a target no agent had"));
    assert!(page.contains("sysctl: 1 need a target"));
    assert!(page.contains("<td class=\"needs_target\">needs_target</td>"));
    // The comparison and its lessons.
    assert!(page.contains("Against run 11"));
    assert!(page.contains("<code>grub2-lesson</code>"));
    assert!(page.contains("<td class=\"regression\">regression</td>"));
    assert!(!page.contains("NaN") && !page.contains("inf"));
    assert_balanced(&page);
}

#[test]
fn text_from_outside_is_escaped() {
    let page = render(&report(Some(comparison())), &history(), &[]);
    assert!(!page.contains(HOSTILE));
    assert!(!page.contains("<script"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains(QUOTES));
    assert!(page.contains("rule&quot;onmouseover=&#39;x&#39;"));
    assert!(!page.contains("<img"));
    assert!(page.contains("&lt;img src=x&gt;"));
    assert!(!page.contains("<b>family</b>"));
    assert!(page.contains("q&amp;a"));
    assert!(page.contains("lesson-&lt;1&gt;"));
    assert!(page.contains("sshd-idle&quot;2"));
    assert!(page.contains("&lt;x&gt; 1"), "escalation reason");
    assert!(page.contains("not_comparable=4 (llm_unavailable=3, previous_run=1)"));
    assert!(page.contains("Reverts withheld: 3 of this run&#39;s 7 rules"));
    assert_eq!(esc("a&<>\"'b"), "a&amp;&lt;&gt;&quot;&#39;b");
}

#[test]
fn the_page_is_self_contained() {
    let page = render(&report(Some(comparison())), &history(), &[]);
    for external in [
        "http://", "https://", "url(", "@import", "<script", "<link", "<img",
    ] {
        assert!(!page.contains(external), "{external} in the page");
    }
    // Every `<` opens one of the page's own tags (text is escaped); none
    // loads anything.
    for tag in page.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap();
        for attr in ["src=", "href=", "xlink:", "srcset="] {
            assert!(!tag.contains(attr), "{attr} in <{tag}>");
        }
    }
}

#[test]
fn empty_and_first_runs_render() {
    // A first run: no comparison, a history of one point.
    let mut h = history();
    h.runs = vec![point(12, Some(0.4), None)];
    let page = render(&report(None), &h, &[]);
    assert_eq!(count(&page, "<svg "), 3);
    assert!(page.contains("no comparison yet"));
    assert!(!page.contains("Against run"));
    assert_balanced(&page);
    // Nothing at all.
    let mut r = report(None);
    r.rules.clear();
    r.fix_rate = None;
    r.first_try_rate = None;
    h.runs.clear();
    let page = render(&r, &h, &[]);
    assert!(page.contains("No rules."));
    assert!(page.contains("No fixed or escalated rule with attempts yet."));
    assert!(!page.contains("NaN") && !page.contains("inf"));
    assert_balanced(&page);
}

/// `FLEET_SAMPLE_HTML=/path cargo test … html` leaves a sample page there.
#[test]
fn a_sample_page() {
    let page = render(&report(Some(comparison())), &history(), &[]);
    if let Ok(path) = std::env::var("FLEET_SAMPLE_HTML") {
        std::fs::write(path, &page).unwrap();
    }
}
