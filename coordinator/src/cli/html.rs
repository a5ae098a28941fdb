//! The run report as one self-contained HTML page (`report --html FILE`):
//! inline CSS and inline SVG charts drawn here, no script, no external
//! style, font or image, so the file can be mailed or archived as is.
//!
//! [`render`] is pure: a `RunReport` and the run's `RunHistory` in, the page
//! out. Every text that comes from outside (rule ids, families, reasons,
//! lesson ids, pack and profile names) goes through [`esc`].
//!
//! Sections: header and totals; fix rate (and first-try rate) with the
//! win:regression ratio across the comparable runs; outcomes by family;
//! attempts per rule; the rules won or regressed against the previous
//! comparable run with the lessons their prompts showed; one row per rule.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use fleet_common::api::{FixSource, RuleOutcome, RunComparison, RunHistory, RunReport};

use super::table::wall;
use fleet_common::host::HostRow;

const FIXED: &str = "#2e7d32";
const ESCALATED: &str = "#c62828";
const PASSING: &str = "#9e9e9e";
const PENDING: &str = "#f9a825";
const NEEDS_TARGET: &str = "#6a1b9a";
const FIRST_TRY: &str = "#1565c0";
const RATIO: &str = "#6a1b9a";

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{:.1}%", r * 100.0))
}

fn when(ts: &str) -> String {
    DateTime::parse_from_rfc3339(ts)
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| ts.to_owned())
}

fn ratio_text(r: Option<f64>) -> String {
    match r {
        None => "–".into(),
        Some(r) if r.is_infinite() => "∞".into(),
        Some(r) => format!("{r:.2}"),
    }
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;padding:24px;color:#212121;background:#fafafa}
main{max-width:1100px;margin:0 auto}
h1{font-size:1.5em;margin:0 0 4px}
h2{font-size:1.15em;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin:0 0 16px}
.meta span{margin-right:18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:10px 14px;min-width:140px}
.card .v{font-size:1.5em;font-weight:600}
.card .k{color:#666;font-size:.85em}
.card .s{color:#888;font-size:.8em}
svg{background:#fff;border:1px solid #e0e0e0;border-radius:6px;max-width:100%;height:auto}
svg text{font-family:inherit;font-size:11px;fill:#424242}
table{border-collapse:collapse;background:#fff;font-size:.9em}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td code,li code{font-size:.95em;word-break:break-all}
.fixed{color:#2e7d32;font-weight:600}
.escalated{color:#c62828;font-weight:600}
.already_passing{color:#757575}
.pending{color:#f57f17}
.needs_target{color:#6a1b9a}
.win{color:#2e7d32;font-weight:600}
.regression{color:#c62828;font-weight:600}
.note{color:#666;font-size:.85em}
";

/// The whole page.
pub fn render(report: &RunReport, history: &RunHistory, hosts: &[HostRow]) -> String {
    let t = &report.totals;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Run {} report: {} / {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        t.run,
        esc(&t.skill_pack),
        esc(&t.profile)
    );
    let _ = writeln!(out, "<h1>Run {} — {}</h1>", t.run, esc(&t.status));
    let _ = write!(
        out,
        "<p class=\"meta\"><span>skill pack <b>{}</b></span><span>profile <b>{}</b></span>\
         <span>created {}</span>",
        esc(&t.skill_pack),
        esc(&t.profile),
        esc(&when(&t.created_at))
    );
    if let Some(f) = &t.finished_at {
        let _ = write!(out, "<span>finished {}</span>", esc(&when(f)));
    }
    if let Some(d) = &t.dream {
        let _ = write!(out, "<span>dream stage {}</span>", esc(d));
    }
    out.push_str("</p>\n");
    out.push_str(&totals(report));
    out.push_str(&hosts::bundle_section(t.bundle.as_ref()));
    out.push_str(&hosts::hosts_table(hosts));

    out.push_str("<h2>Across runs</h2>\n");
    let _ = writeln!(
        out,
        "<p class=\"note\">The completed runs of skill pack {} and profile {} up to this one \
         (at most {}), oldest first. Fix rate = fixed / (fixed + escalated); the \
         win:regression ratio compares each run with the previous one (∞: nothing regressed).</p>",
        esc(&history.skill_pack),
        esc(&history.profile),
        RunHistory::MAX_RUNS
    );
    out.push_str(&trend_chart(history));

    out.push_str("<h2>Outcomes by family</h2>\n");
    out.push_str(&family_chart(report));

    out.push_str("<h2>Attempts per rule</h2>\n");
    out.push_str(&attempts_chart(report));

    if let Some(c) = &t.comparison {
        out.push_str(&changes(c));
    }

    out.push_str(&rules_table(report));
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn card(out: &mut String, key: &str, value: &str, sub: &str) {
    let _ = write!(
        out,
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"s\">{}</div></div>",
        esc(key),
        esc(value),
        esc(sub)
    );
}

fn totals(r: &RunReport) -> String {
    let t = &r.totals;
    let mut out = String::from("<div class=\"cards\">");
    card(
        &mut out,
        "fix rate",
        &pct(r.fix_rate),
        &format!(
            "{} fixed of {} fixed or escalated",
            t.fixed,
            t.fixed + t.escalated
        ),
    );
    card(
        &mut out,
        "first-try rate",
        &pct(r.first_try_rate),
        &format!("{} of {} fixed", t.fixed_first_try, t.fixed),
    );
    card(
        &mut out,
        "mean attempts",
        &t.mean_attempts
            .map_or_else(|| "–".into(), |m| format!("{m:.2}")),
        "over fixed and escalated rules",
    );
    card(
        &mut out,
        "wall time per fixed",
        &t.wall_ms_per_fixed.map_or_else(|| "–".into(), wall),
        "mean",
    );
    card(
        &mut out,
        "wall time per escalated",
        &t.wall_ms_per_escalated.map_or_else(|| "–".into(), wall),
        "mean",
    );
    let unfinished = t.total.saturating_sub(t.finished);
    card(
        &mut out,
        "rules",
        &t.total.to_string(),
        &format!(
            "{} fixed, {} escalated, {} already passing{}{}",
            t.fixed,
            t.escalated,
            t.already_passing,
            if t.needs_target > 0 {
                format!(", {} need a target no agent had", t.needs_target)
            } else {
                String::new()
            },
            if unfinished > 0 {
                format!(", {unfinished} unfinished")
            } else {
                String::new()
            }
        ),
    );
    if !t.escalated_by_reason.is_empty() {
        let reasons: Vec<String> = t
            .escalated_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        card(
            &mut out,
            "escalations by reason",
            &t.escalated.to_string(),
            &reasons.join(", "),
        );
    }
    for (class, need) in &t.needs_target_by_class {
        let more = if (need.examples.len() as u64) < need.rules {
            ", …"
        } else {
            ""
        };
        card(
            &mut out,
            &format!("needs a {class} target"),
            &need.rules.to_string(),
            &format!(
                "never leased nor escalated: {}{more}",
                need.examples.join(", ")
            ),
        );
    }
    card(
        &mut out,
        "lease protocol",
        &t.lease_losses.to_string(),
        &format!(
            "lease losses; {} stale completions rejected",
            t.stale_completions_rejected
        ),
    );
    if let Some(c) = &t.comparison {
        card(
            &mut out,
            &format!("against run {}", c.previous_run),
            &format!("{} / {}", c.wins, c.regressions),
            &format!(
                "wins / regressions, ratio {}; fix rate {}",
                ratio_text(c.ratio()),
                c.fix_rate_delta()
                    .map_or_else(|| "–".into(), |d| format!("{:+.1} points", d * 100.0))
            ),
        );
    }
    out.push_str("</div>\n");
    out
}

fn svg_open(out: &mut String, w: f64, h: f64, label: &str) {
    let _ = writeln!(
        out,
        "<svg viewBox=\"0 0 {w:.0} {h:.0}\" width=\"{w:.0}\" height=\"{h:.0}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, s: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{}</text>",
        esc(s)
    );
}

fn hline(out: &mut String, x1: f64, x2: f64, y: f64, stroke: &str, dash: bool) {
    let _ = writeln!(
        out,
        "<line x1=\"{x1:.1}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\" stroke=\"{stroke}\"{}/>",
        if dash {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        }
    );
}

fn legend(out: &mut String, x: f64, y: f64, items: &[(&str, &str)]) {
    let mut x = x;
    for (color, label) in items {
        let _ = writeln!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/>",
            y - 9.0
        );
        text(out, x + 14.0, y, "start", label);
        x += 24.0 + 6.5 * label.chars().count() as f64;
    }
}

/// A polyline through consecutive points, broken where a value is missing.
fn series(
    out: &mut String,
    points: &[Option<(f64, f64)>],
    color: &str,
    dash: bool,
    tips: &[String],
) {
    let mut run: Vec<(f64, f64)> = Vec::new();
    let flush = |run: &mut Vec<(f64, f64)>, out: &mut String| {
        if run.len() > 1 {
            let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{} points=\"{}\"/>",
                if dash {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                },
                pts.join(" ")
            );
        }
        run.clear();
    };
    for p in points {
        match p {
            Some(p) => run.push(*p),
            None => flush(&mut run, out),
        }
    }
    flush(&mut run, out);
    for (p, tip) in points.iter().zip(tips) {
        if let Some((x, y)) = p {
            let _ = writeln!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{color}\"><title>{}</title></circle>",
                esc(tip)
            );
        }
    }
}

/// Fix rate and first-try rate (top), win:regression ratio (bottom), one
/// point per run of the history.
fn trend_chart(h: &RunHistory) -> String {
    let mut out = String::new();
    if h.runs.is_empty() {
        out.push_str("<p class=\"note\">No runs.</p>\n");
        return out;
    }
    let (w, ht) = (760.0, 380.0);
    let (left, right) = (56.0, 48.0);
    let (rate_top, rate_bottom) = (34.0, 194.0);
    let (ratio_top, ratio_bottom) = (240.0, 330.0);
    let n = h.runs.len();
    let x_of = |i: usize| {
        if n == 1 {
            (left + w - right) / 2.0
        } else {
            left + (w - left - right) * i as f64 / (n - 1) as f64
        }
    };
    svg_open(
        &mut out,
        w,
        ht,
        "fix rate, first-try rate and win:regression ratio across runs",
    );
    legend(
        &mut out,
        left,
        18.0,
        &[
            (FIXED, "fix rate"),
            (FIRST_TRY, "first-try rate (dashed)"),
            (RATIO, "win:regression ratio"),
        ],
    );
    // Rates, 0–100 %.
    let rate_y = |r: f64| rate_bottom - (rate_bottom - rate_top) * r.clamp(0.0, 1.0);
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let y = rate_y(tick);
        hline(&mut out, left, w - right, y, "#e0e0e0", tick > 0.0);
        text(
            &mut out,
            left - 6.0,
            y + 4.0,
            "end",
            &format!("{:.0}%", tick * 100.0),
        );
    }
    let tips = |what: &str, f: &dyn Fn(usize) -> String| -> Vec<String> {
        (0..n)
            .map(|i| format!("run {}: {what} {}", h.runs[i].run, f(i)))
            .collect()
    };
    let fix: Vec<Option<(f64, f64)>> = h
        .runs
        .iter()
        .enumerate()
        .map(|(i, p)| p.fix_rate.map(|r| (x_of(i), rate_y(r))))
        .collect();
    let first: Vec<Option<(f64, f64)>> = h
        .runs
        .iter()
        .enumerate()
        .map(|(i, p)| p.first_try_rate.map(|r| (x_of(i), rate_y(r))))
        .collect();
    series(
        &mut out,
        &first,
        FIRST_TRY,
        true,
        &tips("first-try rate", &|i| pct(h.runs[i].first_try_rate)),
    );
    series(
        &mut out,
        &fix,
        FIXED,
        false,
        &tips("fix rate", &|i| {
            let p = &h.runs[i];
            format!(
                "{} ({} fixed, {} escalated)",
                pct(p.fix_rate),
                p.fixed,
                p.escalated
            )
        }),
    );
    // The win:regression ratio; ∞ (nothing regressed) on the top line.
    let ratios: Vec<Option<f64>> = h
        .runs
        .iter()
        .map(|p| p.comparison.and_then(|c| c.ratio()))
        .collect();
    let finite_max = ratios
        .iter()
        .flatten()
        .filter(|r| r.is_finite())
        .fold(0.0f64, |a, b| a.max(*b));
    let ymax = finite_max.ceil().max(2.0);
    let inf_y = ratio_top;
    let ratio_y = |r: f64| {
        if r.is_infinite() {
            inf_y
        } else {
            ratio_bottom - (ratio_bottom - ratio_top - 24.0) * (r / ymax)
        }
    };
    text(
        &mut out,
        left,
        ratio_top - 12.0,
        "start",
        "win:regression ratio (wins / regressions against the previous run; dashed: 1)",
    );
    hline(&mut out, left, w - right, ratio_bottom, "#bdbdbd", false);
    hline(&mut out, left, w - right, ratio_y(1.0), "#bdbdbd", true);
    hline(&mut out, left, w - right, inf_y, "#eeeeee", true);
    text(&mut out, left - 6.0, ratio_bottom + 4.0, "end", "0");
    text(&mut out, left - 6.0, ratio_y(1.0) + 4.0, "end", "1");
    text(
        &mut out,
        left - 6.0,
        ratio_y(ymax) + 4.0,
        "end",
        &format!("{ymax:.0}"),
    );
    text(&mut out, left - 6.0, inf_y + 4.0, "end", "∞");
    if ratios.iter().all(Option::is_none) {
        text(
            &mut out,
            (left + w - right) / 2.0,
            (ratio_top + ratio_bottom) / 2.0,
            "middle",
            "no comparison yet: the dream stage compares a completed run with the previous one",
        );
    }
    let ratio_pts: Vec<Option<(f64, f64)>> = ratios
        .iter()
        .enumerate()
        .map(|(i, r)| r.map(|r| (x_of(i), ratio_y(r))))
        .collect();
    series(
        &mut out,
        &ratio_pts,
        RATIO,
        false,
        &tips("win:regression ratio", &|i| match h.runs[i].comparison {
            Some(c) => format!(
                "{} ({} wins, {} regressions against run {})",
                ratio_text(c.ratio()),
                c.wins,
                c.regressions,
                c.previous_run
            ),
            None => "–".into(),
        }),
    );
    // Run ids on the x axis (every k-th when crowded; always this run).
    let every = n.div_ceil(16).max(1);
    for (i, p) in h.runs.iter().enumerate() {
        if i % every == 0 || i == n - 1 {
            let label = if p.run == h.run {
                format!("{} (this)", p.run)
            } else {
                p.run.to_string()
            };
            text(&mut out, x_of(i), ratio_bottom + 18.0, "middle", &label);
        }
    }
    text(&mut out, w / 2.0, ht - 8.0, "middle", "run");
    out.push_str("</svg>\n");
    out
}

#[derive(Default)]
struct FamilyCounts {
    fixed: u64,
    escalated: u64,
    passing: u64,
    needs_target: u64,
    pending: u64,
}

impl FamilyCounts {
    fn total(&self) -> u64 {
        self.fixed + self.escalated + self.passing + self.needs_target + self.pending
    }
}

/// One horizontal bar per family: fixed, escalated, already passing,
/// needing a target and pending stacked.
fn family_chart(r: &RunReport) -> String {
    let mut out = String::new();
    let mut families: BTreeMap<&str, FamilyCounts> = BTreeMap::new();
    for rule in &r.rules {
        let c = families.entry(rule.family.as_str()).or_default();
        match rule.outcome {
            RuleOutcome::Fixed => c.fixed += 1,
            RuleOutcome::Escalated => c.escalated += 1,
            RuleOutcome::AlreadyPassing => c.passing += 1,
            RuleOutcome::NeedsTarget => c.needs_target += 1,
            RuleOutcome::Pending => c.pending += 1,
        }
    }
    if families.is_empty() {
        out.push_str("<p class=\"note\">No rules.</p>\n");
        return out;
    }
    let longest = families
        .keys()
        .map(|f| f.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    let label_w = 16.0 + 6.6 * longest as f64;
    let bar_w = 440.0;
    let row = 20.0;
    let top = 34.0;
    let w = label_w + bar_w + 60.0;
    let ht = top + row * families.len() as f64 + 12.0;
    let max = families
        .values()
        .map(FamilyCounts::total)
        .max()
        .unwrap_or(1)
        .max(1);
    svg_open(&mut out, w, ht, "outcomes by family");
    legend(
        &mut out,
        label_w,
        18.0,
        &[
            (FIXED, "fixed"),
            (ESCALATED, "escalated"),
            (PASSING, "already passing"),
            (NEEDS_TARGET, "needs a target"),
            (PENDING, "pending"),
        ],
    );
    for (i, (family, c)) in families.iter().enumerate() {
        let y = top + row * i as f64;
        let shown: String = if family.chars().count() > 40 {
            family.chars().take(39).chain(['…']).collect()
        } else {
            (*family).to_owned()
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}<title>{}</title></text>",
            label_w - 8.0,
            y + 13.0,
            esc(&shown),
            esc(family)
        );
        let mut x = label_w;
        for (n, color, what) in [
            (c.fixed, FIXED, "fixed"),
            (c.escalated, ESCALATED, "escalated"),
            (c.passing, PASSING, "already passing"),
            (c.needs_target, NEEDS_TARGET, "need a target"),
            (c.pending, PENDING, "pending"),
        ] {
            if n == 0 {
                continue;
            }
            let width = bar_w * n as f64 / max as f64;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}: {n} {what}</title></rect>",
                y + 3.0,
                row - 6.0,
                esc(family)
            );
            x += width;
        }
        text(&mut out, x + 6.0, y + 13.0, "start", &c.total().to_string());
    }
    out.push_str("</svg>\n");
    out
}

/// How many fixed and escalated rules took each number of attempts.
fn attempts_chart(r: &RunReport) -> String {
    let mut out = String::new();
    let mut buckets: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut without = 0;
    for rule in &r.rules {
        let fixed = match rule.outcome {
            RuleOutcome::Fixed => true,
            RuleOutcome::Escalated => false,
            _ => continue,
        };
        let Some(a) = rule.attempts else {
            without += 1;
            continue;
        };
        let b = buckets.entry(a).or_default();
        if fixed {
            b.0 += 1;
        } else {
            b.1 += 1;
        }
    }
    let note = if without > 0 {
        format!(
            "<p class=\"note\">{without} escalated rule(s) dead-lettered by the coordinator \
             (lease_lost) have no attempts and are not shown.</p>\n"
        )
    } else {
        String::new()
    };
    let (Some(&lo), Some(&hi)) = (buckets.keys().next(), buckets.keys().next_back()) else {
        out.push_str("<p class=\"note\">No fixed or escalated rule with attempts yet.</p>\n");
        out.push_str(&note);
        return out;
    };
    let lo = lo.min(1);
    let slots: Vec<u32> = (lo..=hi).collect();
    let max = buckets
        .values()
        .map(|(f, e)| (*f).max(*e))
        .max()
        .unwrap_or(1)
        .max(1);
    let (left, top, plot_h) = (50.0, 34.0, 200.0);
    let slot_w = (600.0 / slots.len() as f64).clamp(14.0, 60.0);
    let w = left + slot_w * slots.len() as f64 + 20.0;
    let w = w.max(360.0);
    let ht = top + plot_h + 44.0;
    let bottom = top + plot_h;
    svg_open(&mut out, w, ht, "attempts per rule, fixed and escalated");
    legend(
        &mut out,
        left,
        18.0,
        &[(FIXED, "fixed"), (ESCALATED, "escalated")],
    );
    // A few integer ticks.
    let step = (max as f64 / 4.0).ceil().max(1.0) as u64;
    let mut tick = 0;
    while tick <= max {
        let y = bottom - plot_h * tick as f64 / max as f64;
        hline(&mut out, left, w - 20.0, y, "#eeeeee", false);
        text(&mut out, left - 6.0, y + 4.0, "end", &tick.to_string());
        tick += step;
    }
    hline(&mut out, left, w - 20.0, bottom, "#9e9e9e", false);
    let bar = (slot_w - 6.0) / 2.0;
    for (i, a) in slots.iter().enumerate() {
        let x0 = left + slot_w * i as f64 + 3.0;
        let (f, e) = buckets.get(a).copied().unwrap_or_default();
        for (k, (n, color, what)) in [(f, FIXED, "fixed"), (e, ESCALATED, "escalated")]
            .into_iter()
            .enumerate()
        {
            if n == 0 {
                continue;
            }
            let hgt = plot_h * n as f64 / max as f64;
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hgt:.1}\" fill=\"{color}\"><title>{n} {what} after {a} attempt(s)</title></rect>",
                x0 + bar * k as f64,
                bottom - hgt
            );
        }
        text(&mut out, x0 + bar, bottom + 16.0, "middle", &a.to_string());
    }
    text(&mut out, w / 2.0, ht - 6.0, "middle", "attempts");
    out.push_str("</svg>\n");
    out.push_str(&note);
    out
}

/// The rules won or regressed against the previous comparable run.
fn changes(c: &RunComparison) -> String {
    let mut out = format!(
        "<h2>Against run {}</h2>\n<p>{} win(s) (fixed now, not then), {} regression(s) \
         (fixed then, not now); win:regression ratio {}; fix rate {} → {}; first-try rate {} → {}.</p>\n",
        c.previous_run,
        c.wins,
        c.regressions,
        esc(&ratio_text(c.ratio())),
        pct(c.previous_fix_rate),
        pct(c.fix_rate),
        pct(c.previous_first_try_rate),
        pct(c.first_try_rate),
    );
    if let Some(text) = c.not_comparable_text() {
        out.push_str(&format!(
            "<p class=\"note\">Left out as not comparable (the fleet could not really try them in \
             one of the runs: an outage, a dead target, a lost lease): {}.</p>\n",
            esc(&text)
        ));
    }
    if let Some(why) = &c.revert_withheld {
        out.push_str(&format!(
            "<p class=\"note\">Reverts withheld: {}.</p>\n",
            esc(why)
        ));
    }
    if c.changes.is_empty() {
        out.push_str("<p class=\"note\">No rule changed its outcome.</p>\n");
        return out;
    }
    out.push_str(
        "<table class=\"changes\">\n<thead><tr><th>rule</th><th>change</th><th>lessons shown</th></tr></thead>\n<tbody>\n",
    );
    for ch in &c.changes {
        let lessons = if ch.lessons_shown.is_empty() {
            "–".to_owned()
        } else {
            ch.lessons_shown
                .iter()
                .map(|l| format!("<code>{}</code>", esc(l)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let class = if ch.change == "regression" {
            "regression"
        } else {
            "win"
        };
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td class=\"{class}\">{}</td><td>{lessons}</td></tr>",
            esc(&ch.rule),
            esc(&ch.change)
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn rules_table(r: &RunReport) -> String {
    let changed: BTreeMap<&str, &str> = r
        .totals
        .comparison
        .iter()
        .flat_map(|c| &c.changes)
        .map(|c| (c.rule.as_str(), c.change.as_str()))
        .collect();
    let dash = || "–".to_owned();
    let mut out = format!(
        "<h2>Rules ({})</h2>\n<table class=\"rules\">\n<thead><tr><th>rule</th><th>family</th>\
         <th>outcome</th><th>reason</th><th>attempts</th><th>fixed on attempt</th>\
         <th>fixed by</th><th>wall time</th><th>change</th></tr></thead>\n<tbody>\n",
        r.rules.len()
    );
    for rule in &r.rules {
        let outcome = rule.outcome.as_str();
        let change = changed.get(rule.rule.as_str()).copied().unwrap_or("");
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{outcome}\">{outcome}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"{}\">{}</td></tr>",
            esc(&rule.rule),
            esc(&rule.family),
            esc(rule.reason.as_deref().unwrap_or("–")),
            rule.attempts.map_or_else(dash, |n| n.to_string()),
            rule.fixed_attempt.map_or_else(dash, |n| n.to_string()),
            // A replayed skill from `main`, or the brain (DESIGN H1).
            rule.fixed_by.map_or("–", FixSource::as_str),
            rule.wall_ms.map_or_else(dash, |ms| wall(ms as f64)),
            match change {
                "regression" => "regression",
                "win" => "win",
                _ => "",
            },
            esc(change),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

#[cfg(test)]
mod tests;

mod hosts;
