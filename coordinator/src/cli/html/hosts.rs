//! The hardening parts of the HTML report: the composition check's
//! figures (H3) and, for a harden or compose run, one row per host (H4).

use std::fmt::Write;

use fleet_common::host::{BundleCheck, HostRow};

use super::esc;

/// `<h2>Bundle</h2>` with the check's figure line, or nothing.
pub fn bundle_section(check: Option<&BundleCheck>) -> String {
    let Some(b) = check else {
        return String::new();
    };
    format!(
        "<h2>Bundle</h2>\n<p class=\"note\">main's verified fixes applied together on a fresh \
         target (composition check, run {}): rules passing before and after, skills whose rule \
         failed again after a later section (interference) and sections that broke health.</p>\n\
         <p><code>{}</code></p>\n",
        b.run,
        esc(&b.line())
    )
}

/// `<h2>Hosts</h2>` and a table of `rows`, or nothing.
pub fn hosts_table(rows: &[HostRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Hosts</h2>\n<table>\n<thead><tr><th>host</th><th>labels</th><th>result</th>\
         <th>passing before</th><th>passing after</th><th>applied</th><th>failed</th>\
         <th>reverted</th><th>still failing</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let result = match &r.reason {
            Some(reason) => format!("{}/{reason}", r.outcome),
            None => r.outcome.clone(),
        };
        let cells: [String; 6] = match &r.report {
            Some(rep) => [
                rep.passing_before.len().to_string(),
                rep.passing_after.len().to_string(),
                rep.sections.len().to_string(),
                rep.sections
                    .iter()
                    .filter(|s| s.exit_code != Some(0) || !s.health_failed.is_empty())
                    .count()
                    .to_string(),
                rep.revert_state().into(),
                rep.failing_after.join(" "),
            ],
            None => Default::default(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            esc(&r.host),
            esc(&labels.join(", ")),
            esc(&result)
        );
        for c in &cells {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::host::HostReport;
    use fleet_common::RunId;

    #[test]
    fn host_rows_and_figures_are_escaped() {
        let row = HostRow {
            host: "web<1>".into(),
            labels: [("role".to_owned(), "<b>".to_owned())].into(),
            outcome: "escalated".into(),
            reason: Some("health".into()),
            held: false,
            sections_done: 1,
            report: Some(HostReport {
                passing_before: vec!["a".into()],
                failing_after: vec!["x<y".into()],
                health_failed: Some("a".into()),
                ..HostReport::default()
            }),
        };
        let html = hosts_table(&[row]);
        assert!(
            html.contains("web&lt;1&gt;") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("escalated/health") && html.contains("no revert configured"));
        assert!(html.contains("x&lt;y"));
        assert!(hosts_table(&[]).is_empty());
        let check = BundleCheck {
            run: RunId(4),
            skills: 3,
            pass_before: 10,
            pass_after: 13,
            interference: 0,
            health_failed: 0,
        };
        let html = bundle_section(Some(&check));
        assert!(
            html.contains("bundle: skills=3 pass_before=10 pass_after=13"),
            "{html}"
        );
        assert!(bundle_section(None).is_empty());
    }
}
