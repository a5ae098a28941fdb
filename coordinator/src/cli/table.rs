//! Plain-text tables and one-line summaries of API answers.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use fleet_common::api::{
    AgentInfo, DreamReport, LedgerLine, PromotionInfo, RunComparison, RunReport, RunStatus,
};

/// Left-aligned first column, right-aligned others, two spaces apart.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    render_with(header, rows, 1)
}

/// The first `left` columns left-aligned, the others right-aligned, two
/// spaces apart.
fn render_with(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            if i < left {
                let _ = write!(l, "{sep}{cell:<w$}", w = width[i]);
            } else {
                let _ = write!(l, "{sep}{cell:>w$}", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn pct(n: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / total as f64)
    }
}

/// Outcome counts, escalations by reason and protocol counters.
pub fn run_summary(s: &RunStatus) -> String {
    let mut rows = vec![
        vec!["fixed".into(), s.fixed.to_string(), pct(s.fixed, s.total)],
        vec![
            "already_passing".into(),
            s.already_passing.to_string(),
            pct(s.already_passing, s.total),
        ],
        vec![
            "escalated".into(),
            s.escalated.to_string(),
            pct(s.escalated, s.total),
        ],
    ];
    for (reason, n) in &s.escalated_by_reason {
        rows.push(vec![format!("  {reason}"), n.to_string(), pct(*n, s.total)]);
    }
    if s.needs_target > 0 {
        rows.push(vec![
            "needs_target".into(),
            s.needs_target.to_string(),
            pct(s.needs_target, s.total),
        ]);
        for (class, need) in &s.needs_target_by_class {
            rows.push(vec![
                format!("  {class}"),
                need.rules.to_string(),
                pct(need.rules, s.total),
            ]);
        }
    }
    let unfinished = s.total.saturating_sub(s.finished);
    if unfinished > 0 {
        rows.push(vec![
            "unfinished".into(),
            unfinished.to_string(),
            pct(unfinished, s.total),
        ]);
    }
    rows.push(vec!["total".into(), s.total.to_string(), String::new()]);
    let mut out = format!(
        "run {} {} (skill pack {}, profile {}{})\n",
        s.run,
        s.status,
        s.skill_pack,
        s.profile,
        elapsed(s).map(|d| format!(", {d}")).unwrap_or_default()
    );
    out.push_str(&render(&["outcome", "tasks", "share"], &rows));
    out.push('\n');
    let needs = s.needs_target_lines();
    if !needs.is_empty() {
        // Never leased nor escalated: no live agent had such a target.
        for line in needs {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
    out.push_str(&totals(s));
    out.push('\n');
    if let Some(c) = &s.comparison {
        out.push_str(&comparison(c));
        out.push('\n');
    }
    if let Some(b) = &s.bundle {
        out.push_str(&format!(
            "{} (composition check: run {})\n\n",
            b.line(),
            b.run
        ));
    }
    out.push_str(&render(
        &["lease protocol", "count"],
        &[
            vec!["lease losses".into(), s.lease_losses.to_string()],
            vec![
                "stale completions rejected".into(),
                s.stale_completions_rejected.to_string(),
            ],
        ],
    ));
    out
}

/// Fix rate, first-try rate, mean attempts and mean wall times.
pub fn totals(s: &RunStatus) -> String {
    let attempted = s.fixed + s.escalated;
    let rate = |r: Option<f64>, of: String| match r {
        Some(r) => format!("{:.1}%  ({of})", r * 100.0),
        None => "-".into(),
    };
    render_with(
        &["totals", ""],
        &[
            vec![
                "fix rate".into(),
                rate(
                    s.fix_rate(),
                    format!("{} fixed of {attempted} fixed or escalated", s.fixed),
                ),
            ],
            vec![
                "first-try rate".into(),
                rate(
                    s.first_try_rate(),
                    format!("{} of {} fixed", s.fixed_first_try, s.fixed),
                ),
            ],
            vec![
                "mean attempts".into(),
                s.mean_attempts
                    .map_or_else(|| "-".into(), |m| format!("{m:.2}")),
            ],
            vec![
                "wall time per fixed".into(),
                s.wall_ms_per_fixed.map_or_else(|| "-".into(), wall),
            ],
            vec![
                "wall time per escalated".into(),
                s.wall_ms_per_escalated.map_or_else(|| "-".into(), wall),
            ],
        ],
        2,
    )
}

/// The regression analysis against the previous comparable run (D6).
pub fn comparison(c: &RunComparison) -> String {
    let delta =
        |d: Option<f64>| d.map_or_else(|| "-".into(), |d| format!("{:+.1} points", d * 100.0));
    let ratio = match c.ratio() {
        None => "-".to_owned(),
        Some(r) if r.is_infinite() => "inf (nothing regressed)".to_owned(),
        Some(r) => format!("{r:.2}"),
    };
    render_with(
        &[&format!("against run {}", c.previous_run), ""],
        &[
            vec!["wins (fixed now, not then)".into(), c.wins.to_string()],
            vec![
                "regressions (fixed then, not now)".into(),
                c.regressions.to_string(),
            ],
            vec!["win:regression ratio".into(), ratio],
            vec!["fix rate change".into(), delta(c.fix_rate_delta())],
            vec![
                "first-try rate change".into(),
                delta(c.first_try_rate_delta()),
            ],
            vec![
                "not comparable (left out)".into(),
                c.not_comparable_text().unwrap_or_else(|| "0".into()),
            ],
            vec![
                "reverts".into(),
                c.revert_withheld
                    .as_ref()
                    .map_or_else(|| "on".into(), |why| format!("withheld: {why}")),
            ],
        ],
        2,
    )
}

fn ledger_rows(lines: &[LedgerLine]) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|l| {
            vec![
                l.id.map_or_else(|| "-".into(), |i| format!("#{i}")),
                l.action.clone(),
                l.verdict.clone(),
                l.kind.clone(),
                l.lesson.clone(),
                l.reason.clone(),
            ]
        })
        .collect()
}

/// What a dream pass did (or, dry, would do).
pub fn dream(r: &DreamReport) -> String {
    let mut out = format!(
        "dream over run {}{} in {}\n",
        r.run,
        if r.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
        wall(r.duration_ms as f64)
    );
    match &r.comparison {
        Some(c) => out.push_str(&comparison(c)),
        None => out.push_str("no previous comparable run (same skill pack and profile)\n"),
    }
    let header = ["ledger", "action", "verdict", "kind", "lesson", "reason"];
    if !r.reverted.is_empty() {
        out.push('\n');
        out.push_str(&render_with(&header, &ledger_rows(&r.reverted), 6));
    }
    out.push('\n');
    if r.promotions.is_empty() {
        out.push_str("no candidates\n");
    } else {
        out.push_str(&render_with(&header, &ledger_rows(&r.promotions), 6));
    }
    let _ = writeln!(
        out,
        "\nranking {}; main {} -> {}",
        if r.ranking_changed {
            "republished"
        } else {
            "unchanged"
        },
        short(r.main_before.as_deref()),
        short(r.main_after.as_deref()),
    );
    out
}

fn short(commit: Option<&str>) -> String {
    commit.map_or_else(|| "-".into(), |c| c.chars().take(10).collect())
}

/// Ledger entries.
pub fn promotions(list: &[PromotionInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let mut reason = p.reason.clone().unwrap_or_default();
            if p.open {
                reason = format!("OPEN: {reason}");
            }
            if let Some(by) = p.reverted_by {
                reason = format!("{reason} (reverted by #{by})");
            }
            vec![
                format!("#{}", p.id),
                p.run.to_string(),
                p.action.clone(),
                p.verdict.clone(),
                p.kind.clone().unwrap_or_default(),
                p.family.clone().unwrap_or_default(),
                p.lesson.clone(),
                reason,
            ]
        })
        .collect();
    render_with(
        &[
            "ledger", "run", "action", "verdict", "kind", "family", "lesson", "reason",
        ],
        &rows,
        8,
    )
}

/// A wall time in ms: `850 ms`, `12.3 s`, `4m 05s`.
pub fn wall(ms: f64) -> String {
    if ms < 1_000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else {
        let secs = (ms / 1_000.0).round() as u64;
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}

/// One row per rule (sorted by rule id), then the run's summary and totals.
pub fn report(r: &RunReport) -> String {
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = r
        .rules
        .iter()
        .map(|rule| {
            vec![
                rule.rule.clone(),
                rule.family.clone(),
                rule.outcome.as_str().to_owned(),
                rule.reason.clone().unwrap_or_else(dash),
                rule.attempts.map_or_else(dash, |n| n.to_string()),
                rule.wall_ms.map_or_else(dash, |ms| wall(ms as f64)),
                rule.fixed_by.map_or_else(dash, |s| s.as_str().to_owned()),
            ]
        })
        .collect();
    let mut out = render_with(
        &[
            "rule",
            "family",
            "outcome",
            "reason",
            "attempts",
            "wall time",
            "fixed by",
        ],
        &rows,
        4,
    );
    out.push('\n');
    out.push_str(&run_summary(&r.totals));
    out
}

/// One line for scripts and logs.
/// The one line `make fleet` ends with. The regression ratio comes from the
/// dream stage's comparison with the previous comparable run: `n/a` on a
/// first run (or when nothing changed), `inf` when nothing regressed.
pub fn fleet_line(s: &RunStatus) -> String {
    let rate = |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}"));
    let ratio = match s.comparison.as_ref().and_then(|c| c.ratio()) {
        Some(r) if r.is_infinite() => "inf".to_owned(),
        other => rate(other),
    };
    // Rules no live agent could serve (issue 24), only when there are any.
    let needs = if s.needs_target > 0 {
        format!(" needs_target={}", s.needs_target)
    } else {
        String::new()
    };
    format!(
        "fleet: run={} skill={} rules={} fixed={} escalated={} fix_rate={} first_try_rate={} regression_ratio={ratio}{needs}",
        s.run,
        s.skill_pack,
        s.total,
        s.fixed,
        s.escalated,
        rate(s.fix_rate()),
        rate(s.first_try_rate()),
    )
}

pub fn run_line(s: &RunStatus) -> String {
    let reasons: Vec<String> = s
        .escalated_by_reason
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    let needs: Vec<String> = s
        .needs_target_by_class
        .iter()
        .map(|(class, need)| format!("{class}={}", need.rules))
        .collect();
    format!(
        "run {} {}: {}/{} finished, fixed={} already_passing={} escalated={}{}{} lease_losses={} stale_rejected={}",
        s.run,
        s.status,
        s.finished,
        s.total,
        s.fixed,
        s.already_passing,
        s.escalated,
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(" ")) },
        if needs.is_empty() { String::new() } else { format!(" needs_target={} ({})", s.needs_target, needs.join(" ")) },
        s.lease_losses,
        s.stale_completions_rejected
    )
}

pub fn agents(list: &[AgentInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                a.agent.to_string(),
                if a.host.is_empty() {
                    "-".into()
                } else {
                    a.host.clone()
                },
                if a.version.is_empty() {
                    "-".into()
                } else {
                    a.version.clone()
                },
                if a.alive { "yes".into() } else { "no".into() },
                a.target_class
                    .map_or_else(|| "-".into(), |c| c.as_str().to_owned()),
                a.last_seen_ms
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render(
        &[
            "agent",
            "host",
            "version",
            "alive",
            "targets",
            "last seen (utc)",
        ],
        &rows,
    )
}

fn elapsed(s: &RunStatus) -> Option<String> {
    let start = DateTime::parse_from_rfc3339(&s.created_at).ok()?;
    let end = match &s.finished_at {
        Some(f) => DateTime::parse_from_rfc3339(f).ok()?.with_timezone(&Utc),
        None => Utc::now(),
    };
    let secs = (end - start.with_timezone(&Utc)).num_seconds().max(0);
    Some(format!("{}m {:02}s", secs / 60, secs % 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = render(
            &["a", "n"],
            &[
                vec!["long name".into(), "1".into()],
                vec!["x".into(), "100".into()],
            ],
        );
        assert_eq!(t, "a            n\nlong name    1\nx          100\n");
    }

    #[test]
    fn leading_columns_can_be_left_aligned() {
        let t = render_with(
            &["a", "b", "n"],
            &[vec!["xx".into(), "y".into(), "10".into()]],
            2,
        );
        assert_eq!(t, "a   b   n\nxx  y  10\n");
    }

    #[test]
    fn rules_that_needed_a_target_get_their_row_and_line() {
        let mut s: RunStatus = serde_json::from_value(serde_json::json!({
            "run": 4, "skill_pack": "ssg-debian11-standard", "profile": "standard",
            "status": "completed", "total": 10, "finished": 10, "fixed": 2,
            "already_passing": 1, "escalated": 0, "escalated_by_reason": {},
            "lease_losses": 0, "stale_completions_rejected": 0,
            "created_at": "2026-12-01T00:00:00+00:00", "finished_at": null
        }))
        .unwrap();
        assert!(!run_summary(&s).contains("needs"));
        assert!(!fleet_line(&s).contains("needs_target"));
        s.needs_target = 7;
        s.needs_target_by_class.insert(
            "vm".into(),
            fleet_common::api::TargetNeed {
                rules: 7,
                examples: vec![
                    "service_cron_enabled".into(),
                    "sysctl_fs_suid_dumpable".into(),
                ],
            },
        );
        let out = run_summary(&s);
        assert!(
            out.lines()
                .any(|l| l.starts_with("needs_target ") && l.ends_with(" 7  70.0%")),
            "{out}"
        );
        assert!(
            out.contains("needs a vm target: 7 (service_cron_enabled, sysctl_fs_suid_dumpable, …)"),
            "{out}"
        );
        assert!(out.contains("2 fixed of 2 fixed or escalated"), "{out}");
        assert!(fleet_line(&s).ends_with(" needs_target=7"));
        assert!(run_line(&s).contains("escalated=0 needs_target=7 (vm=7) "));
    }

    #[test]
    fn wall_times_read_at_a_glance() {
        assert_eq!(wall(0.0), "0 ms");
        assert_eq!(wall(850.4), "850 ms");
        assert_eq!(wall(2_000.0), "2.0 s");
        assert_eq!(wall(12_345.0), "12.3 s");
        assert_eq!(wall(245_000.0), "4m 05s");
    }
}
