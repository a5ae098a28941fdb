//! End to end with the `openai` brain: the coordinator binary plans the
//! Debian 11 standard profile on the target image; one agent binary, on its
//! own Docker target, asks the fake OpenAI-compatible endpoint for every fix
//! and reflection, and OpenSCAP inside the target judges each script.
//!
//! Run 1 shows the loop (a first-try fix, a fix after a reflection, rules
//! the Worker never gets right) and where candidate lessons go: Postgres and
//! the lease's branch, never the run's own prompts (D3). The dream stage
//! then runs by itself: the lesson that led to a fix and the passing
//! scripts are promoted onto `main`, lessons without evidence deferred, the
//! ranking published (D1, D7). A lesson is then put on `main` with a score
//! in `ranking.json`; run 2 shows it to the Worker, which now fixes the
//! rule, and Postgres records the lesson's rank and score for the attempt
//! (E4); the comparison with run 1 counts the win (D6). In run 3 the skill
//! on `main` no longer works (the test breaks it, so its replay fails, H1)
//! and the endpoint gets the rule wrong again: the regression reverts the
//! skill promoted after run 2 by a new fast-forward commit (D8). Run 4
//! fixes the rule again (a skill again); in run 5 the endpoint is down for
//! the whole run (503): the rule escalates `llm_unavailable`, which is not
//! comparable, so nothing regresses and nothing is reverted (D6, amended).

use std::time::Duration;

use fleet_common::api::RuleOutcome;
use fleet_common::Budgets;
use fleet_knowledge::{LessonFile, LessonKind, Provenance, RankedLesson, Ranking};
use fleet_tests::fake_llm::{FakeLlm, Reply};
use fleet_tests::fleet::{Fleet, FleetOpts};

const PACK: &str = "ssg-debian11-standard";
const REFLECTOR: &str = "Answer with JSON only";
const LESSON_ID: &str = "audit-needs-auditd";

/// The endpoint's script: cron right away, rsyslog once the Reflector's
/// lesson is in the prompt, audit only with the lesson from `main`.
fn script(llm: &FakeLlm) {
    llm.on_all(
        &[REFLECTOR, "package_rsyslog_installed"],
        vec![Reply::lesson(
            "Install rsyslog from the local repository with apt-get.",
            None,
            "rule",
        )],
    )
    .on(
        REFLECTOR,
        vec![Reply::lesson(
            "Use the package manager; editing files by hand does not install anything.",
            Some(r"dpkg\s+--force-all"),
            "family",
        )],
    )
    .on(
        LESSON_ID,
        vec![Reply::script("apt-get install -y -q auditd")],
    )
    .on(
        "package_cron_installed",
        vec![Reply::script("apt-get install -y -q cron")],
    )
    .on_all(
        &["package_rsyslog_installed", "Lesson drawn: Install rsyslog"],
        vec![Reply::script("apt-get install -y -q rsyslog")],
    )
    .otherwise(Reply::script("echo 'looked around, changed nothing'"));
}

/// (lesson, kind, action, verdict) of the ledger entries of `run`.
async fn ledger(fleet: &Fleet, run: fleet_common::RunId) -> Vec<(String, String, String, String)> {
    sqlx::query_as(
        "SELECT lesson_id, COALESCE(kind, ''), action, verdict FROM promotions
         WHERE run_id = $1 ORDER BY id",
    )
    .bind(run.0)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap()
}

fn on_main(fleet: &Fleet, path: &str) -> bool {
    !fleet
        .knowledge_git(&["ls-tree", "--name-only", "refs/heads/main", path], None)
        .trim()
        .is_empty()
}

fn lesson_on_main() -> (Vec<u8>, Vec<u8>) {
    let lesson = LessonFile {
        id: LESSON_ID.into(),
        kind: LessonKind::Lesson,
        family: "package_installed".into(),
        scope: "family".into(),
        pattern: None,
        provenance: Provenance {
            run: "1".into(),
            attempt: 1,
            agent: "operator".into(),
            source_commit: None,
            merged: Vec::new(),
        },
        body: "The audit rules need the auditd package, not just the audit libraries.\n".into(),
    };
    let ranking = Ranking {
        lessons: vec![RankedLesson {
            family: "package_installed".into(),
            rule: None,
            id: LESSON_ID.into(),
            score: 0.8,
        }],
        ..Ranking::default()
    };
    (lesson.render().into_bytes(), ranking.to_json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_brain_remediates_the_profile_and_a_lesson_on_main_changes_the_outcome() {
    let llm = FakeLlm::start().await;
    script(&llm);
    // No hold: during run 5's outage every rule must end (DESIGN D6).
    let mut fleet = Fleet::start(FleetOpts {
        agent_env: vec![
            ("FLEET_LLM_HOLD".into(), "false".into()),
            ("FLEET_LLM_RETRIES".into(), "1".into()),
        ],
        ..FleetOpts::llm(&llm.base_url)
    })
    .await;
    let budgets = Budgets {
        max_attempts: 2,
        wall_time_s: 300,
    };

    // Run 1: the whole profile.
    let first = fleet.submit_with(PACK, vec![], budgets).await;
    assert_eq!(first.tasks, 44);
    fleet
        .wait_completed(first.run, Duration::from_secs(900))
        .await;
    let report = fleet.report(first.run).await;
    let cron = report
        .rule("package_cron_installed")
        .expect("in the report");
    assert_eq!(
        (cron.outcome, cron.fixed_attempt),
        (RuleOutcome::Fixed, Some(1))
    );
    let rsyslog = report
        .rule("package_rsyslog_installed")
        .expect("in the report");
    assert_eq!(
        (rsyslog.outcome, rsyslog.fixed_attempt),
        (RuleOutcome::Fixed, Some(2)),
        "fixed once the reflection was in the prompt"
    );
    let audit = report
        .rule("package_audit_installed")
        .expect("in the report");
    assert_eq!(audit.outcome, RuleOutcome::Escalated);
    assert_eq!(audit.reason.as_deref(), Some("attempt_budget"));
    assert_eq!(audit.attempts, Some(2));
    assert!(audit.wall_ms.is_some_and(|ms| ms > 0));
    // Nothing else changes anything: exactly two fixes, one on the first try.
    assert_eq!(report.totals.fixed, 2);
    assert_eq!(report.first_try_rate, Some(0.5));
    let attempted = report.totals.fixed + report.totals.escalated;
    let fix_rate = report.fix_rate.expect("a fix rate");
    assert!(
        (fix_rate - 2.0 / attempted as f64).abs() < 1e-9,
        "{fix_rate}"
    );
    assert_eq!(report.totals.already_passing, first.already_passing);

    // Candidates: in Postgres with their lease's provenance…
    let candidates: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT l.id, l.kind, l.scope FROM lessons l JOIN work_items w ON w.id = l.work_item_id
         WHERE w.run_id = $1 AND w.rule_id = 'package_audit_installed' ORDER BY l.id",
    )
    .bind(first.run.0)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = candidates.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(
        kinds,
        ["lesson", "ban", "lesson", "ban"],
        "a lesson and a ban per failed attempt: {candidates:?}"
    );
    let reflected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts a JOIN work_items w ON w.id = a.work_item_id
         WHERE w.run_id = $1 AND a.reflection = 'lesson'",
    )
    .bind(first.run.0)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert!(
        reflected >= 3,
        "every failed attempt reflected: {reflected}"
    );
    // …and as files on the lease's branch.
    let epoch: i64 = sqlx::query_scalar(
        "SELECT accepted_epoch FROM work_items WHERE run_id = $1 AND rule_id = 'package_audit_installed'",
    )
    .bind(first.run.0)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    let branch = format!(
        "refs/heads/agent/{}/{}/package_audit_installed-e{epoch}",
        fleet.agent_id(0),
        first.run
    );
    let file = fleet.knowledge_git(
        &[
            "show",
            &format!("{branch}:lessons/package_installed/{}.md", candidates[0].0),
        ],
        None,
    );
    let on_branch = LessonFile::parse(&file).expect("a valid lesson file");
    assert_eq!(on_branch.provenance.agent, fleet.agent_id(0));
    assert_eq!(on_branch.provenance.attempt, 1);
    // D3: no candidate was shown to any prompt of its own run.
    let shown: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM lesson_attributions la JOIN attempts a ON a.id = la.attempt_id
         JOIN work_items w ON w.id = a.work_item_id WHERE w.run_id = $1",
    )
    .bind(first.run.0)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(shown, 0);

    // The dream stage over run 1: the lesson that led to rsyslog's fix and
    // the two passing scripts go onto main; audit's lessons wait (no fix
    // followed them).
    fleet.wait_dreamt(first.run).await;
    let entries = ledger(&fleet, first.run).await;
    // Lessons and bans (skills are decided first, strongest evidence first).
    let verdict_of = |lesson: &str| {
        entries
            .iter()
            .find(|e| e.0.starts_with(lesson) && e.1 != "skill")
            .map(|e| (e.1.clone(), e.3.clone()))
    };
    assert_eq!(
        verdict_of("package_rsyslog_installed-r"),
        Some(("lesson".into(), "APPLY".into())),
        "{entries:?}"
    );
    assert_eq!(
        verdict_of(&candidates[0].0),
        Some(("lesson".into(), "DEFER".into())),
        "{entries:?}"
    );
    let skills: Vec<&str> = entries
        .iter()
        .filter(|e| e.1 == "skill" && e.3 == "APPLY")
        .map(|e| e.0.as_str())
        .collect();
    assert_eq!(skills.len(), 2, "cron and rsyslog: {entries:?}");
    assert!(on_main(&fleet, "skills/package_cron_installed.sh"));
    assert!(on_main(&fleet, "skills/package_rsyslog_installed.sh"));
    let published = Ranking::from_json(
        fleet
            .knowledge_git(&["show", "refs/heads/main:ranking.json"], None)
            .as_bytes(),
    )
    .expect("a ranking on main");
    assert!(
        published.priors.contains_key("package_installed"),
        "{published:?}"
    );
    assert!(fleet.main_only_fast_forwards(), "main only fast-forwards");

    // Run 2: the same rule with a ranked lesson on main.
    let (lesson, ranking) = lesson_on_main();
    fleet.commit_on_main(
        &[
            ("lessons/package_installed/audit-needs-auditd.md", &lesson),
            ("ranking.json", &ranking),
        ],
        "test: accept a lesson",
    );
    let second = fleet
        .submit_with(PACK, vec!["package_audit_installed".into()], budgets)
        .await;
    fleet
        .wait_completed(second.run, Duration::from_secs(300))
        .await;
    let report = fleet.report(second.run).await;
    let audit = report
        .rule("package_audit_installed")
        .expect("in the report");
    assert_eq!(
        (audit.outcome, audit.fixed_attempt),
        (RuleOutcome::Fixed, Some(1)),
        "the lesson on main made the difference"
    );
    let attributed: Vec<(String, i32, f64)> = sqlx::query_as(
        "SELECT la.lesson_id, la.rank, la.score FROM lesson_attributions la
         JOIN attempts a ON a.id = la.attempt_id JOIN work_items w ON w.id = a.work_item_id
         WHERE w.run_id = $1",
    )
    .bind(second.run.0)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(attributed, vec![(LESSON_ID.to_owned(), 1, 0.8)]);
    fleet.wait_dreamt(second.run).await;
    let status = fleet.status(second.run).await;
    let comparison = status.comparison.expect("run 1 is comparable");
    assert_eq!(comparison.previous_run, first.run);
    assert_eq!((comparison.wins, comparison.regressions), (1, 0));
    assert!(on_main(&fleet, "skills/package_audit_installed.sh"));

    // Run 3: the skill stops working (its replay fails) and the endpoint
    // forgets how; the rule regresses, and the skill promoted after run 2
    // is reverted.
    fleet.commit_on_main(
        &[("skills/package_audit_installed.sh", b"exit 1\n")],
        "test: the audit skill goes stale",
    );
    llm.reset()
        .otherwise(Reply::script("echo 'looked around, changed nothing'"));
    let third = fleet
        .submit_with(PACK, vec!["package_audit_installed".into()], budgets)
        .await;
    fleet
        .wait_completed(third.run, Duration::from_secs(300))
        .await;
    fleet.wait_dreamt(third.run).await;
    let comparison = fleet
        .status(third.run)
        .await
        .comparison
        .expect("comparable");
    assert_eq!((comparison.wins, comparison.regressions), (0, 1));
    let reverts: Vec<_> = ledger(&fleet, third.run)
        .await
        .into_iter()
        .filter(|e| e.2 == "revert")
        .collect();
    assert_eq!(reverts.len(), 1, "{reverts:?}");
    assert_eq!(reverts[0].1, "skill");
    assert!(
        !on_main(&fleet, "skills/package_audit_installed.sh"),
        "reverted"
    );
    assert!(
        on_main(&fleet, "skills/package_cron_installed.sh"),
        "untouched"
    );
    assert!(
        fleet.main_only_fast_forwards(),
        "the revert is a fast-forward too"
    );

    // Run 4: the endpoint knows how again; the fix becomes a skill again.
    llm.reset()
        .on(
            "package_audit_installed",
            vec![Reply::script("apt-get install -y -q auditd")],
        )
        .otherwise(Reply::script("echo 'looked around, changed nothing'"));
    let fourth = fleet
        .submit_with(PACK, vec!["package_audit_installed".into()], budgets)
        .await;
    fleet
        .wait_completed(fourth.run, Duration::from_secs(300))
        .await;
    fleet.wait_dreamt(fourth.run).await;
    assert_eq!(
        ledger(&fleet, fourth.run)
            .await
            .iter()
            .filter(|e| e.1 == "skill" && e.3 == "APPLY")
            .count(),
        1
    );

    // Run 5: an outage. The skill goes stale again and the endpoint
    // answers 503 for the whole run: the rule escalates `llm_unavailable`,
    // which is no regression, and the skill promoted after run 4 stays.
    fleet.commit_on_main(
        &[("skills/package_audit_installed.sh", b"exit 1\n")],
        "test: the audit skill goes stale again",
    );
    llm.set_down(true);
    let fifth = fleet
        .submit_with(PACK, vec!["package_audit_installed".into()], budgets)
        .await;
    fleet
        .wait_completed(fifth.run, Duration::from_secs(300))
        .await;
    fleet.wait_dreamt(fifth.run).await;
    let audit = fleet
        .report(fifth.run)
        .await
        .rule("package_audit_installed")
        .expect("in the report")
        .clone();
    assert_eq!(audit.reason.as_deref(), Some("llm_unavailable"));
    assert!(llm.refused_while_down() > 0);
    let comparison = fleet
        .status(fifth.run)
        .await
        .comparison
        .expect("comparable with run 4");
    assert_eq!(comparison.previous_run, fourth.run);
    assert_eq!((comparison.wins, comparison.regressions), (0, 0));
    assert_eq!(
        comparison.not_comparable_text().as_deref(),
        Some("not_comparable=1 (llm_unavailable=1)")
    );
    let why = comparison
        .revert_withheld
        .expect("the whole run was an outage");
    assert!(why.contains("an outage is not a regression"), "{why}");
    assert!(
        ledger(&fleet, fifth.run)
            .await
            .iter()
            .all(|e| e.2 != "revert"),
        "an outage reverts nothing"
    );
    assert!(on_main(&fleet, "skills/package_audit_installed.sh"));
    llm.set_down(false);

    fleet
        .stop_agent_and_check_branches(
            0,
            &[first.run, second.run, third.run, fourth.run, fifth.run],
        )
        .await;
}
