//! The run report end to end: the real coordinator binary, a run whose
//! outcomes this test chooses (completed through the real lease scripts and
//! ingested by the coordinator), then `GET /api/v1/runs/{id}/report` and
//! the `report` subcommand of the binary; then a second run of the same
//! rules, compared with the first by the dream stage, its history
//! (`GET /api/v1/runs/{id}/history`) and `report --html`.

use std::time::{Duration, Instant};

use fleet_common::api::{
    PointComparison, RuleOutcome, RuleReport, RunHistory, RunReport, RunStatus,
};
use fleet_common::event::EVENT_VERSION;
use fleet_common::lease::{Lease, LeaseClient};
use fleet_common::{AgentId, EscalationReason, Event, EventBody, EventId, Outcome, RunId};
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::procs::bin;
use fleet_tests::queue::fast_settings;
use fleet_tests::services::redis_url;

/// What the test's stand-in agent reports per rule: outcome, attempts,
/// wall time (ms). `None`: the lease is left to expire (lease_lost).
fn planned(rule: &str) -> Option<(Outcome, u32, u64)> {
    let escalated = |reason| Outcome::Escalated { reason };
    match rule {
        "sshd_a" => Some((Outcome::Fixed { attempt: 1 }, 1, 1_000)),
        "sshd_b" => Some((Outcome::Fixed { attempt: 2 }, 2, 3_000)),
        "audit_rules_dac_modification_chmod" => {
            Some((escalated(EscalationReason::AttemptBudget), 3, 6_000))
        }
        "file_permissions_etc_shadow" => Some((escalated(EscalationReason::Health), 1, 2_000)),
        "accounts_password_pam_minlen" => Some((Outcome::AlreadyPassing, 0, 400)),
        "sshd_c" => None,
        other => panic!("unplanned rule {other}"),
    }
}

const RULES: [&str; 6] = [
    "sshd_b",
    "sshd_a",
    "audit_rules_dac_modification_chmod",
    "file_permissions_etc_shadow",
    "accounts_password_pam_minlen",
    "sshd_c",
];

fn completion(lease: &Lease, agent: &AgentId, seq: u64, plan: (Outcome, u32, u64)) -> Event {
    let (outcome, attempts, duration_ms) = plan;
    Event {
        v: EVENT_VERSION,
        id: EventId::new_v7(),
        run: lease.task.run,
        task: lease.task.task,
        rule: lease.task.rule.clone(),
        agent: agent.clone(),
        incarnation: 1,
        epoch: lease.epoch,
        attempt: 0,
        seq,
        ts_ms: chrono::Utc::now().timestamp_millis(),
        body: EventBody::TaskCompleted {
            outcome,
            attempts,
            duration_ms,
        },
    }
}

/// The second run: `sshd_b` regresses, `file_permissions_etc_shadow` and
/// `sshd_c` are won; every lease is completed.
fn planned_again(rule: &str) -> Option<(Outcome, u32, u64)> {
    let escalated = |reason| Outcome::Escalated { reason };
    Some(match rule {
        "sshd_b" => (escalated(EscalationReason::AttemptBudget), 3, 5_000),
        "file_permissions_etc_shadow" => (Outcome::Fixed { attempt: 1 }, 1, 1_500),
        "sshd_c" => (Outcome::Fixed { attempt: 2 }, 2, 2_500),
        other => planned(other)?,
    })
}

type Plan = fn(&str) -> Option<(Outcome, u32, u64)>;

/// Leases every task of the run as one agent and completes each as
/// planned, leaving the leases of unplanned rules to expire.
async fn drive(leases: &LeaseClient, agent: &str, planned: Plan) {
    let agent = AgentId::parse(agent).unwrap();
    let mut done = 0;
    let mut seq = 0;
    let start = Instant::now();
    while done < RULES.len() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {done} tasks leased"
        );
        let Some(lease) = leases.lease(&agent).await.ok().flatten() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        done += 1;
        if let Some(plan) = planned(&lease.task.rule) {
            seq += 1;
            let c = leases
                .complete(&lease, &completion(&lease, &agent, seq, plan))
                .await
                .unwrap();
            assert!(c.is_accepted(), "{}: {c:?}", lease.task.rule);
        }
    }
}

async fn report(http: &reqwest::Client, api: &str, run: RunId) -> RunReport {
    let resp = http
        .get(format!("{api}/api/v1/runs/{run}/report"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

fn row(
    rule: &str,
    family: &str,
    outcome: RuleOutcome,
    reason: Option<&str>,
    attempts: Option<u32>,
    wall_ms: Option<u64>,
    fixed_attempt: Option<u32>,
) -> RuleReport {
    RuleReport {
        rule: rule.into(),
        family: family.into(),
        outcome,
        reason: reason.map(str::to_owned),
        attempts,
        wall_ms,
        fixed_attempt,
        fixed_by: None,
    }
}

async fn cli(api: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(bin("fleet-coordinator"))
        .arg("report")
        .args(args)
        .env("FLEET_API_URL", api)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_each_rule_and_the_run_totals_in_the_api_and_the_cli() {
    // A loss budget of 1: the one expired lease is dead-lettered at once.
    let fleet = Fleet::start(FleetOpts {
        agents: 0,
        lease_loss_budget: 1,
        ..Default::default()
    })
    .await;
    let run = fleet
        .submit(RULES.iter().map(|r| r.to_string()).collect())
        .await;
    let http = reqwest::Client::new();

    // Before any outcome: every rule pending, no rates, no means.
    let before = report(&http, &fleet.api, run).await;
    assert_eq!(before.rules.len(), RULES.len());
    assert!(before
        .rules
        .iter()
        .all(|r| r.outcome == RuleOutcome::Pending && r.attempts.is_none()));
    assert_eq!((before.fix_rate, before.first_try_rate), (None, None));
    assert_eq!(before.totals.mean_attempts, None);

    // Short leases, so `sshd_c`'s expires within seconds.
    let leases = LeaseClient::connect(&redis_url(), fleet.keys.clone(), fast_settings(1_500, 1))
        .await
        .unwrap();
    drive(&leases, "agent-r", planned).await;
    let status: RunStatus = fleet.wait_completed(run, Duration::from_secs(60)).await;

    let r = report(&http, &fleet.api, run).await;
    let t = &r.totals;
    assert_eq!(
        (
            t.total,
            t.finished,
            t.fixed,
            t.fixed_first_try,
            t.escalated,
            t.already_passing
        ),
        (6, 6, 2, 1, 3, 1)
    );
    assert_eq!(t.lease_losses, 1);
    // 2 fixed of 2 fixed + 3 escalated; 1 of 2 fixed on the first try.
    assert_eq!(r.fix_rate, Some(0.4));
    assert_eq!(r.first_try_rate, Some(0.5));
    // Attempts 1, 2, 3, 1; wall times 1 s and 3 s fixed, 6 s and 2 s
    // escalated. The lease_lost rule has no figures and counts in neither.
    assert_eq!(t.mean_attempts, Some(1.75));
    assert_eq!(t.wall_ms_per_fixed, Some(2_000.0));
    assert_eq!(t.wall_ms_per_escalated, Some(4_000.0));
    // The status endpoint's SQL agrees with the report's arithmetic.
    assert_eq!(
        (
            status.mean_attempts,
            status.wall_ms_per_fixed,
            status.wall_ms_per_escalated
        ),
        (
            t.mean_attempts,
            t.wall_ms_per_fixed,
            t.wall_ms_per_escalated
        )
    );
    use RuleOutcome::*;
    assert_eq!(
        r.rules,
        vec![
            row(
                "accounts_password_pam_minlen",
                "accounts_password_pam",
                AlreadyPassing,
                None,
                Some(0),
                Some(400),
                None
            ),
            row(
                "audit_rules_dac_modification_chmod",
                "audit_rules_dac_modification",
                Escalated,
                Some("attempt_budget"),
                Some(3),
                Some(6_000),
                None
            ),
            row(
                "file_permissions_etc_shadow",
                "file_permissions",
                Escalated,
                Some("health"),
                Some(1),
                Some(2_000),
                None
            ),
            row("sshd_a", "sshd", Fixed, None, Some(1), Some(1_000), Some(1)),
            row("sshd_b", "sshd", Fixed, None, Some(2), Some(3_000), Some(2)),
            row(
                "sshd_c",
                "sshd",
                Escalated,
                Some("lease_lost"),
                None,
                None,
                None
            ),
        ]
    );

    // Unknown and malformed runs, as for the status endpoint.
    let resp = http
        .get(format!("{}/api/v1/runs/999999/report", fleet.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("run 999999 not found"));
    let resp = http
        .get(format!("{}/api/v1/runs/abc/report", fleet.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // The CLI: a table per rule and the totals.
    let run_id = run.to_string();
    let out = cli(&fleet.api, &["--run", &run_id]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    let line = |start: &str| {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("rule "),
        "rule family outcome reason attempts wall time fixed by"
    );
    // No attempt events here: where the fix came from is not known.
    assert_eq!(line("sshd_b "), "sshd_b sshd fixed - 2 3.0 s -");
    assert_eq!(line("sshd_c "), "sshd_c sshd escalated lease_lost - - -");
    assert_eq!(
        line("audit_rules_dac_modification_chmod "),
        "audit_rules_dac_modification_chmod audit_rules_dac_modification escalated attempt_budget 3 6.0 s -"
    );
    assert_eq!(
        line("accounts_password_pam_minlen "),
        "accounts_password_pam_minlen accounts_password_pam already_passing - 0 400 ms -"
    );
    assert_eq!(
        line("fix rate "),
        "fix rate 40.0% (2 fixed of 5 fixed or escalated)"
    );
    assert_eq!(
        line("first-try rate "),
        "first-try rate 50.0% (1 of 2 fixed)"
    );
    assert_eq!(line("mean attempts "), "mean attempts 1.75");
    assert_eq!(line("wall time per fixed "), "wall time per fixed 2.0 s");
    assert_eq!(
        line("wall time per escalated "),
        "wall time per escalated 4.0 s"
    );

    // --json is the API's RunReport; the run as an argument works too.
    let out = cli(&fleet.api, &[&run_id, "--json"]).await;
    assert!(out.status.success());
    let json: RunReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.rules, r.rules);
    assert_eq!(json.fix_rate, r.fix_rate);

    // An unknown run: the server's message and exit status 2.
    let out = cli(&fleet.api, &["--run", "999999"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run 999999 not found"));

    // A second run of the same rules; the dream stage compares it with the
    // first: 1 win, 1 regression; `sshd_c`, fixed now, was lost (not
    // comparable) in the first run and counts apart (DESIGN D6).
    let again = fleet
        .submit(RULES.iter().map(|r| r.to_string()).collect())
        .await;
    drive(&leases, "agent-s", planned_again).await;
    fleet.wait_completed(again, Duration::from_secs(60)).await;
    let start = Instant::now();
    let status = loop {
        let s = fleet.status(again).await;
        if s.dream.is_some() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no dream pass over run {again}; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.dream.as_deref(), Some("done"));
    let c = status.comparison.expect("a comparison with the first run");
    assert_eq!((c.previous_run, c.wins, c.regressions), (run, 1, 1));
    assert_eq!(c.previous_not_comparable, 1);
    assert_eq!(
        c.not_comparable_text().as_deref(),
        Some("not_comparable=1 (previous_run=1)")
    );
    assert_eq!(c.revert_withheld, None);

    // The history: both runs, oldest first, with their rates and the
    // second's comparison; the first run's history is the first run alone.
    let history = |run: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/runs/{run}/history", fleet.api);
        async move { http.get(url).send().await.unwrap() }
    };
    let resp = history(again.to_string()).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let h: RunHistory = resp.json().await.unwrap();
    assert_eq!(
        (h.run, h.skill_pack.as_str(), h.profile.as_str()),
        (again, "sim-demo", r.totals.profile.as_str())
    );
    let runs: Vec<RunId> = h.runs.iter().map(|p| p.run).collect();
    assert_eq!(runs, vec![run, again]);
    let (first, second) = (&h.runs[0], &h.runs[1]);
    assert_eq!(
        (first.fix_rate, first.first_try_rate),
        (Some(0.4), Some(0.5))
    );
    assert_eq!(first.comparison, None);
    assert_eq!(second.status, "completed");
    // 3 fixed (sshd_a, file_permissions_etc_shadow, sshd_c) of 5.
    assert_eq!((second.fixed, second.escalated), (3, 2));
    assert_eq!(second.fix_rate, Some(0.6));
    assert_eq!(second.first_try_rate, Some(2.0 / 3.0));
    assert_eq!(
        second.comparison,
        Some(PointComparison {
            previous_run: run,
            wins: 1,
            regressions: 1
        })
    );
    let h1: RunHistory = history(run.to_string()).await.json().await.unwrap();
    assert_eq!(h1.runs.len(), 1);
    assert_eq!(h1.runs[0], *first);
    assert_eq!(history("999999".into()).await.status(), 404);
    assert_eq!(history("abc".into()).await.status(), 400);

    // `report --html`: one self-contained page with the figures.
    let file = fleet.logs.join(format!("report-{again}.html"));
    let again_id = again.to_string();
    let out = cli(
        &fleet.api,
        &["--run", &again_id, "--html", file.to_str().unwrap()],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The table still goes to stdout, with the comparison's left-out rules.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("fix rate"));
    assert!(
        stdout.contains("not comparable (left out)")
            && stdout.contains("not_comparable=1 (previous_run=1)"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&file).unwrap();
    println!("report --html wrote {}", file.display());
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains(&format!("<h1>Run {again} — completed</h1>")));
    assert!(page.contains("60.0%"), "fix rate");
    assert!(page.contains("3 fixed of 5 fixed or escalated"));
    assert!(page.contains("66.7%"), "first-try rate");
    for rule in RULES {
        assert!(
            page.contains(&format!("<tr><td><code>{rule}</code></td>")),
            "no row for {rule}"
        );
    }
    assert_eq!(page.matches("<svg ").count(), 3);
    assert_eq!(page.matches("</svg>").count(), 3);
    assert!(page.contains(&format!("run {run}: fix rate 40.0%")));
    assert!(page.contains(&format!("run {again}: fix rate 60.0%")));
    assert!(page.contains(&format!(
        "run {again}: win:regression ratio 1.00 (1 wins, 1 regressions against run {run})"
    )));
    assert!(page.contains(&format!("<h2>Against run {run}</h2>")));
    assert!(page.contains("not_comparable=1 (previous_run=1)"));
    assert!(page.contains("<td class=\"regression\">regression</td>"));
    for external in ["http://", "https://", "<script", "src=", "href="] {
        assert!(!page.contains(external), "{external} in the page");
    }
    // An unknown run writes nothing.
    let missing = fleet.logs.join("missing.html");
    let out = cli(
        &fleet.api,
        &["--run", "999999", "--html", missing.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());

    fleet.shutdown().await;
}
