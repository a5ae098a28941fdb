//! `harden`: read and check the inventory, probe every host, submit the
//! rollout, follow it host by host, then print a table per host and what
//! still fails.

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_common::host::{HostRow, Rollout, SubmitHarden};
use fleet_coordinator::hosts::preflight::probe_all;

use super::args::HardenArgs;
use super::{client, client_token, inventory, Usage};

/// How often the rollout's progress is read.
const POLL: Duration = Duration::from_millis(700);

pub async fn harden(a: HardenArgs) -> anyhow::Result<()> {
    let token = client_token(a.token)?;
    let hosts = inventory::load(&a.inventory).map_err(|e| Usage(format!("{e:#}")))?;
    if a.concurrency == 0 || a.max_fail_percent > 100 {
        return Err(Usage(
            "--concurrency must be at least 1 and --max-fail-percent at most 100".into(),
        )
        .into());
    }
    if !a.no_preflight {
        eprintln!(
            "harden: probing {} host(s) over SSH before anything runs",
            hosts.len()
        );
        let bad = probe_all(&hosts, &a.sandbox_image)
            .await
            .map_err(|e| Usage(format!("preflight: {e}")))?;
        if !bad.is_empty() {
            let lines: Vec<String> = bad
                .iter()
                .map(|u| format!("{}: {}", u.host, u.why))
                .collect();
            return Err(Usage(format!(
                "{} host(s) failed the preflight; no host was touched:\n  - {}",
                bad.len(),
                lines.join("\n  - ")
            ))
            .into());
        }
    }
    let api = client::Api::new(&a.client.api)?;
    let req = SubmitHarden {
        skill_pack: a.skill_pack,
        profile: a.profile,
        hosts,
        check_only: a.check,
        rollout: Rollout {
            concurrency: a.concurrency,
            canary: a.canary,
            max_fail_percent: a.max_fail_percent,
        },
    };
    let submitted = api.harden(&token, &req).await?;
    eprintln!(
        "harden: run {} rolls {} skill(s) of main {} out to {} host(s){}",
        submitted.run,
        submitted.skills,
        short(&submitted.main_commit),
        submitted.hosts,
        if a.check {
            " (check only: nothing changes)"
        } else {
            ""
        }
    );
    let rows = follow(&api, submitted.run).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
        let failing = still_failing(&rows);
        if !failing.is_empty() && !a.check {
            println!(
                "{} rule(s) of the profile still fail on some host; to learn them: fleet-coordinator submit --skill-pack {} --failing-from {} --watch",
                failing.len(),
                req.skill_pack,
                submitted.run
            );
        }
    }
    let failed = rows.iter().filter(|r| r.outcome == "escalated").count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} host(s) not hardened", rows.len());
    }
    Ok(())
}

/// Polls the run's hosts, printing each change of state, until none is
/// pending.
async fn follow(api: &client::Api, run: fleet_common::RunId) -> anyhow::Result<Vec<HostRow>> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let rows = api.hosts(run).await?;
        for r in &rows {
            let now = progress(r);
            if seen.get(&r.host) != Some(&now) {
                eprintln!("harden: {:<20} {now}", r.host);
                seen.insert(r.host.clone(), now);
            }
        }
        if rows.iter().all(|r| r.outcome != "pending") {
            return Ok(rows);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn progress(r: &HostRow) -> String {
    match (r.outcome.as_str(), r.held) {
        ("pending", true) => "waiting for the rollout".into(),
        ("pending", false) if r.sections_done == 0 => "in progress (scan)".into(),
        ("pending", false) => format!("in progress ({} section(s) applied)", r.sections_done),
        (outcome, _) => match &r.reason {
            Some(reason) => format!("{outcome} ({reason})"),
            None => outcome.to_owned(),
        },
    }
}

/// One line per host: passing before and after, applied, failed, reverted.
pub fn table(rows: &[HostRow]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<20} {:<16} {:>6} {:>6} {:>7} {:>6} {:<20} {}\n",
        "host", "result", "before", "after", "applied", "failed", "reverted", "note"
    );
    for r in rows {
        let result = match (&r.outcome[..], &r.reason) {
            ("escalated", Some(reason)) => format!("escalated/{reason}"),
            (o, _) => o.to_owned(),
        };
        let (before, after, applied, failed, reverted, note) = match &r.report {
            Some(rep) => (
                rep.passing_before.len().to_string(),
                rep.passing_after.len().to_string(),
                rep.sections.len().to_string(),
                rep.sections
                    .iter()
                    .filter(|s| s.exit_code != Some(0))
                    .count()
                    .to_string(),
                rep.revert_state().to_owned(),
                match (&rep.health_failed, rep.check_only) {
                    (Some(section), _) => format!("health failed after {section}"),
                    (None, true) => format!("would apply {}", rep.would_apply.join(" ")),
                    (None, false) => String::new(),
                },
            ),
            None => Default::default(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:<16} {:>6} {:>6} {:>7} {:>6} {:<20} {}",
            r.host, result, before, after, applied, failed, reverted, note
        );
        if let Some(rep) = &r.report {
            if !rep.check_only && rep.health_failed.is_none() && !rep.failing_after.is_empty() {
                let _ = writeln!(
                    out,
                    "{:<20} still failing: {}",
                    "",
                    rep.failing_after.join(" ")
                );
            }
        }
    }
    out
}

/// Rules failing after the rollout on any host, sorted, once each.
pub fn still_failing(rows: &[HostRow]) -> Vec<String> {
    let mut rules: Vec<String> = rows
        .iter()
        .filter_map(|r| r.report.as_ref())
        .flat_map(|rep| rep.failing_after.iter().cloned())
        .collect();
    rules.sort();
    rules.dedup();
    rules
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}
