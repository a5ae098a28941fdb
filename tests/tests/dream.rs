//! The dream stage by hand, on the simulation (fast, no Docker): the
//! coordinator binary with `--auto-dream false`, one sim agent, and the
//! `dream` and `promotions` subcommands of the binary.
//!
//! A dry run reports the verdicts and writes nothing; the real pass then
//! applies the same verdicts: each fixed rule's passing script becomes a
//! skill on `main` by one fast-forward commit per APPLY, except on the
//! pack's always-escalate list (`grub2_*`), which waits for an operator.
//! One escalation is approved (its skill reaches `main`), one rejected.

use std::time::Duration;

use fleet_agent::sim::{behaviour, SimBehaviour};
use fleet_common::api::{DreamReport, PromotionInfo};
use fleet_knowledge::{DreamAction, DreamTrailers, MainTree};
use fleet_tests::fleet::{Fleet, FleetOpts};

/// Two `grub2_*` rules the simulation fixes, and some ordinary ones.
fn rules() -> (Vec<String>, Vec<String>) {
    let grub: Vec<String> = (0..)
        .map(|i| format!("grub2_sim_argument_{i}"))
        .filter(|r| matches!(behaviour(r), SimBehaviour::FixedOnAttempt(_)))
        .take(2)
        .collect();
    let mut all: Vec<String> = (0..12).map(|i| format!("sshd_sim_option_{i}")).collect();
    all.extend(grub.iter().cloned());
    (all, grub)
}

/// Commits on `main` since `base`.
fn commits_since(fleet: &Fleet, base: &str) -> usize {
    fleet
        .knowledge_git(
            &["rev-list", "--count", &format!("{base}..refs/heads/main")],
            None,
        )
        .trim()
        .parse()
        .unwrap()
}

fn on_main(fleet: &Fleet, path: &str) -> bool {
    !fleet
        .knowledge_git(&["ls-tree", "--name-only", "refs/heads/main", path], None)
        .trim()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dream_by_hand_shows_then_applies_its_verdicts_and_operators_decide_escalations() {
    let mut fleet = Fleet::start(FleetOpts {
        agents: 1,
        auto_dream: false,
        ..Default::default()
    })
    .await;
    let (rules, grub) = rules();
    let run = fleet.submit(rules.clone()).await;
    let status = fleet.wait_completed(run, Duration::from_secs(120)).await;
    let fixed: Vec<String> = rules
        .iter()
        .filter(|r| matches!(behaviour(r), SimBehaviour::FixedOnAttempt(n) if n <= 3))
        .cloned()
        .collect();
    assert_eq!(status.fixed as usize, fixed.len());
    let main_before = fleet.knowledge_main();

    // A dry run: verdicts, no ledger, no commit.
    let (ok, out, err) = fleet.cli(&["dream", "--run", &run.to_string(), "--dry-run", "--json"]);
    assert!(ok, "{err}");
    let dry: DreamReport = serde_json::from_str(&out).unwrap();
    assert!(dry.dry_run && dry.comparison.is_none());
    let verdicts = |r: &DreamReport| {
        let mut v: Vec<(String, String)> = r
            .promotions
            .iter()
            .map(|l| {
                (
                    l.lesson.split("-r").next().unwrap().to_owned(),
                    l.verdict.clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut want: Vec<(String, String)> = fixed
        .iter()
        .map(|r| {
            let v = if r.starts_with("grub2_") {
                "ESCALATE"
            } else {
                "APPLY"
            };
            (r.clone(), v.to_owned())
        })
        .collect();
    want.sort();
    assert_eq!(verdicts(&dry), want);
    assert!(dry
        .promotions
        .iter()
        .all(|l| l.id.is_none() && l.commit.is_none()));
    assert_eq!(
        fleet.knowledge_main(),
        main_before,
        "a dry run moves no ref"
    );
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM promotions")
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap();
    assert_eq!(ledger, 0, "a dry run writes no ledger entry");

    // The real pass: the same verdicts, one commit per APPLY plus the ranking.
    let (ok, out, err) = fleet.cli(&["dream", "--run", &run.to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("APPLY") && out.contains("ESCALATE"), "{out}");
    let (ok, out, _) = fleet.cli(&["dream", "--run", &run.to_string(), "--json"]);
    assert!(ok);
    let again: DreamReport = serde_json::from_str(&out).unwrap();
    assert!(
        again.promotions.is_empty(),
        "decided candidates are not decided twice"
    );
    for r in &fixed {
        assert_eq!(
            on_main(&fleet, &format!("skills/{r}.sh")),
            !r.starts_with("grub2_"),
            "{r}"
        );
    }
    let applied = fixed.iter().filter(|r| !r.starts_with("grub2_")).count();
    let commits = commits_since(&fleet, &main_before);
    assert_eq!(
        commits,
        applied + 1,
        "one commit per APPLY, one for the ranking"
    );
    let first_parent = fleet.knowledge_git(
        &[
            "rev-list",
            "--first-parent",
            "--count",
            &format!("{main_before}..refs/heads/main"),
        ],
        None,
    );
    assert_eq!(
        first_parent.trim().parse::<usize>().unwrap(),
        commits,
        "fast-forward only"
    );

    // The operator's side.
    let (ok, out, _) = fleet.cli(&["promotions", "list", "--open", "--json"]);
    assert!(ok);
    let open: Vec<PromotionInfo> = serde_json::from_str(&out).unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    let id_of = |rule: &str| {
        open.iter()
            .find(|p| p.rule.as_deref() == Some(rule))
            .unwrap()
            .id
    };
    let (approve, reject) = (id_of(&grub[0]), id_of(&grub[1]));
    let (ok, out, err) = fleet.cli(&[
        "promotions",
        "approve",
        &approve.to_string(),
        "--by",
        "tester",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("main is now"), "{out}");
    let (ok, _, err) = fleet.cli(&[
        "promotions",
        "reject",
        &reject.to_string(),
        "--by",
        "tester",
    ]);
    assert!(ok, "{err}");
    assert!(on_main(&fleet, &format!("skills/{}.sh", grub[0])));
    assert!(!on_main(&fleet, &format!("skills/{}.sh", grub[1])));
    // Each commit names its run and ledger entry in trailers, so a
    // bundle's provenance is read from git alone (H2).
    let tree = MainTree::open(&fleet.knowledge_dir()).unwrap();
    let trailers = |rule: &str| {
        tree.last_write(&format!("skills/{rule}.sh"))
            .unwrap()
            .unwrap()
            .trailers
    };
    let promoted = |ledger| DreamTrailers::new(DreamAction::Promote, run.0, ledger);
    assert_eq!(trailers(&grub[0]), promoted(approve));
    let auto = fixed.iter().find(|r| !r.starts_with("grub2_")).unwrap();
    let auto_ledger: i64 = sqlx::query_scalar(
        "SELECT id FROM promotions WHERE run_id = $1 AND rule_id = $2 AND kind = 'skill' AND verdict = 'APPLY'",
    )
    .bind(run.0)
    .bind(auto)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(trailers(auto), promoted(auto_ledger));
    // Decided entries are closed: deciding again is refused (exit 2).
    let (ok, _, err) = fleet.cli(&[
        "promotions",
        "approve",
        &reject.to_string(),
        "--by",
        "tester",
    ]);
    assert!(!ok && err.contains("not an open escalation"), "{err}");
    let (ok, out, _) = fleet.cli(&["promotions", "list", "--open"]);
    assert!(ok && out.contains("no open escalations"), "{out}");
    let decided: Vec<(String, bool, Option<String>)> = sqlx::query_as(
        "SELECT verdict, open, decided_by FROM promotions WHERE id = ANY($1) ORDER BY id",
    )
    .bind(vec![approve, reject])
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    assert!(decided
        .iter()
        .all(|(v, open, by)| v == "ESCALATE" && !open && by.as_deref() == Some("tester")));

    // A run still in progress cannot be dreamt over (no agent works on it).
    fleet.stop_agents().await;
    let running = fleet.submit(vec!["sshd_sim_option_99".into()]).await;
    let (ok, _, err) = fleet.cli(&["dream", "--run", &running.to_string()]);
    assert!(!ok && err.contains("still running"), "{err}");
    fleet.shutdown().await;
}

/// The Dream Daemon's bound: a pass applies at most `max_promotions`, the
/// rest DEFER with the `budget` gate named in the ledger (and counted in
/// the metrics), and the next pass takes them up, strongest evidence first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_applies_at_most_its_budget_and_the_next_pass_takes_up_the_rest() {
    let fleet = Fleet::start(FleetOpts {
        agents: 1,
        auto_dream: false,
        skill_packs: Some(fleet_tests::coord::packs_with(
            "[dream]\nmax_promotions = 3",
        )),
        ..Default::default()
    })
    .await;
    let rules: Vec<String> = (0..12).map(|i| format!("sshd_sim_option_{i}")).collect();
    let run = fleet.submit(rules).await;
    let status = fleet.wait_completed(run, Duration::from_secs(120)).await;
    assert!(status.fixed > 3, "more fixes than the budget: {status:?}");
    let main_before = fleet.knowledge_main();

    let (ok, out, err) = fleet.cli(&["dream", "--run", &run.to_string(), "--json"]);
    assert!(ok, "{err}");
    let report: DreamReport = serde_json::from_str(&out).unwrap();
    let applied = report
        .promotions
        .iter()
        .filter(|l| l.verdict == "APPLY")
        .count();
    let budgeted: Vec<_> = report
        .promotions
        .iter()
        .filter(|l| l.verdict == "DEFER" && l.reason.contains("budget of 3 promotions"))
        .collect();
    assert_eq!(applied, 3, "{:#?}", report.promotions);
    assert_eq!(
        budgeted.len(),
        status.fixed as usize - 3,
        "every other fix waits: {:#?}",
        report.promotions
    );
    let gates: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT gates FROM promotions WHERE run_id = $1 AND verdict = 'DEFER' ORDER BY id",
    )
    .bind(run.0)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    assert!(
        gates
            .iter()
            .filter(|g| g.to_string().contains("\"budget\""))
            .count()
            == budgeted.len(),
        "the ledger names the budget gate: {gates:?}"
    );
    let commits = commits_since(&fleet, &main_before);
    assert_eq!(commits, 3 + 1, "three promotions and the ranking");
    let metrics = reqwest::get(format!("{}/metrics", fleet.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "fleet_dream_budget_deferrals_total{{budget=\"promotions\"}} {}",
        budgeted.len()
    );
    assert!(metrics.contains(&line), "{line} in\n{metrics}");

    // The next run's pass takes the deferred fixes up, three at a time.
    let next = fleet.submit(vec!["sshd_sim_option_99".into()]).await;
    fleet.wait_completed(next, Duration::from_secs(60)).await;
    let (ok, out, err) = fleet.cli(&["dream", "--run", &next.to_string(), "--json"]);
    assert!(ok, "{err}");
    let report: DreamReport = serde_json::from_str(&out).unwrap();
    let taken_up = report
        .promotions
        .iter()
        .filter(|l| l.verdict == "APPLY" && budgeted.iter().any(|b| b.lesson == l.lesson))
        .count();
    assert_eq!(taken_up, 3.min(budgeted.len()), "{:#?}", report.promotions);
    fleet.shutdown().await;
}
