//! Plain-text tables and one-line summaries of API answers.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use fleet_common::api::{AgentInfo, RunStatus};

/// Left-aligned first column, right-aligned others, two spaces apart.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
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
            if i == 0 {
                let _ = write!(l, "{cell:<w$}", w = width[0]);
            } else {
                let _ = write!(l, "  {cell:>w$}", w = width[i]);
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

/// One line for scripts and logs.
/// The one line `make fleet` ends with. The regression ratio needs the dream
/// stage's comparison with the previous run; until then it is `n/a`.
pub fn fleet_line(s: &RunStatus) -> String {
    let rate = |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}"));
    format!(
        "fleet: run={} skill={} rules={} fixed={} escalated={} fix_rate={} first_try_rate={} regression_ratio=n/a",
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
    format!(
        "run {} {}: {}/{} finished, fixed={} already_passing={} escalated={}{} lease_losses={} stale_rejected={}",
        s.run,
        s.status,
        s.finished,
        s.total,
        s.fixed,
        s.already_passing,
        s.escalated,
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(" ")) },
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
                a.last_seen_ms
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render(
        &["agent", "host", "version", "alive", "last seen (utc)"],
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
}
