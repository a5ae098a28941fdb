//! DESIGN H1 end to end: the coordinator binary and one agent binary with
//! the `openai` brain on the fake endpoint, a Docker target, OpenSCAP.
//!
//! Run 1 fixes two package rules through the brain; the dream stage
//! promotes their scripts as `skills/<rule>.sh` on `main`. Run 2, on fresh
//! targets, fixes both by replaying those skills: not one LLM request about
//! them, no prompt, no new skill candidate, and the report says `skill`.
//! Then the test puts a broken skill for one rule on `main`: run 3's replay
//! fails, the brain is asked with the failed skill shown as a prior
//! attempt, fixes the rule, and the dream stage puts the brain's script on
//! `main` in place of the broken one.

use std::time::Duration;

use fleet_common::api::{FixSource, RuleOutcome, RunReport};
use fleet_common::{Budgets, RunId};
use fleet_tests::fake_llm::{FakeLlm, Reply};
use fleet_tests::fleet::{Fleet, FleetOpts};

const PACK: &str = "ssg-debian11-standard";
const CRON: &str = "package_cron_installed";
const RSYSLOG: &str = "package_rsyslog_installed";
const BROKEN: &str = "apt-get install -y -q crond\n";
const REPLACEMENT: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q cron";
/// What the brain's prompt says about a failed replay.
const FAILED_REPLAY: &str = "verified skill from main (skills/package_cron_installed.sh)";

fn script(llm: &FakeLlm) {
    llm.on_all(&[CRON, FAILED_REPLAY], vec![Reply::script(REPLACEMENT)])
        .on(CRON, vec![Reply::script("apt-get install -y -q cron")])
        .on(
            RSYSLOG,
            vec![Reply::script("apt-get install -y -q rsyslog")],
        )
        .otherwise(Reply::script("echo 'looked around, changed nothing'"));
}

/// (lesson, kind, verdict) of the promotions ledger of `run`.
async fn ledger(fleet: &Fleet, run: RunId) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT lesson_id, COALESCE(kind, ''), verdict FROM promotions
         WHERE run_id = $1 AND action = 'promote' ORDER BY id",
    )
    .bind(run.0)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap()
}

fn fixed_by(report: &RunReport, id: &str) -> (RuleOutcome, Option<u32>, Option<FixSource>) {
    let r = report.rule(id).expect("in the report");
    (r.outcome, r.fixed_attempt, r.fixed_by)
}

fn skill_on_main(fleet: &Fleet, rule: &str) -> String {
    fleet.knowledge_git(
        &["show", &format!("refs/heads/main:skills/{rule}.sh")],
        None,
    )
}

async fn count(fleet: &Fleet, sql: &str, run: RunId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(run.0)
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_on_main_are_replayed_before_the_brain_and_a_broken_one_is_replaced() {
    let llm = FakeLlm::start().await;
    script(&llm);
    let mut fleet = Fleet::start(FleetOpts::llm(&llm.base_url)).await;
    let budgets = Budgets {
        max_attempts: 2,
        wall_time_s: 300,
    };
    let rules = vec![CRON.to_owned(), RSYSLOG.to_owned()];

    // Run 1: the brain fixes both; the dream stage promotes the skills.
    let first = fleet.submit_with(PACK, rules.clone(), budgets).await;
    fleet
        .wait_completed(first.run, Duration::from_secs(300))
        .await;
    let report = fleet.report(first.run).await;
    for r in [CRON, RSYSLOG] {
        assert_eq!(
            fixed_by(&report, r),
            (RuleOutcome::Fixed, Some(1), Some(FixSource::Brain)),
            "{r}"
        );
    }
    fleet.wait_dreamt(first.run).await;
    assert_eq!(
        skill_on_main(&fleet, CRON).trim(),
        "apt-get install -y -q cron"
    );
    assert_eq!(
        skill_on_main(&fleet, RSYSLOG).trim(),
        "apt-get install -y -q rsyslog"
    );

    // Run 2, fresh targets: both fixed by their skills, no LLM request.
    let asked = (
        llm.requests_mentioning(CRON),
        llm.requests_mentioning(RSYSLOG),
    );
    let second = fleet.submit_with(PACK, rules.clone(), budgets).await;
    fleet
        .wait_completed(second.run, Duration::from_secs(300))
        .await;
    let report = fleet.report(second.run).await;
    for r in [CRON, RSYSLOG] {
        assert_eq!(
            fixed_by(&report, r),
            (RuleOutcome::Fixed, Some(1), Some(FixSource::Skill)),
            "{r}"
        );
    }
    assert_eq!(
        (
            llm.requests_mentioning(CRON),
            llm.requests_mentioning(RSYSLOG)
        ),
        asked,
        "the brain was asked about a rule its skill fixed"
    );
    assert_eq!(
        count(
            &fleet,
            "SELECT count(*) FROM run_events WHERE run_id = $1 AND kind = 'prompt_assembled'",
            second.run
        )
        .await,
        0,
        "a replay shows no lessons"
    );
    // The attempt names the blob it replayed, the one on main.
    let blob = fleet.knowledge_git(
        &["rev-parse", &format!("refs/heads/main:skills/{CRON}.sh")],
        None,
    );
    let recorded: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT a.script_source, a.skill_blob FROM attempts a JOIN work_items w ON w.id = a.work_item_id
         WHERE w.run_id = $1 AND w.rule_id = $2",
    )
    .bind(second.run.0)
    .bind(CRON)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        vec![("skill".to_owned(), Some(blob.trim().to_owned()))]
    );
    // Nothing new to promote: the replayed scripts are on main already.
    fleet.wait_dreamt(second.run).await;
    let entries = ledger(&fleet, second.run).await;
    assert!(
        entries.iter().all(|e| e.1 != "skill"),
        "a replay proposed its own skill again: {entries:?}"
    );

    // The skill on main breaks; run 3: the replay fails, the brain is
    // shown it and fixes the rule; its script replaces the skill.
    fleet.commit_on_main(
        &[(&format!("skills/{CRON}.sh"), BROKEN.as_bytes())],
        "test: the cron skill goes stale",
    );
    let third = fleet
        .submit_with(PACK, vec![CRON.to_owned()], budgets)
        .await;
    fleet
        .wait_completed(third.run, Duration::from_secs(300))
        .await;
    let report = fleet.report(third.run).await;
    assert_eq!(
        fixed_by(&report, CRON),
        (RuleOutcome::Fixed, Some(2), Some(FixSource::Brain))
    );
    let prompts = llm.prompts();
    let shown = prompts
        .iter()
        .find(|p| p.contains(FAILED_REPLAY))
        .unwrap_or_else(|| panic!("no prompt showed the failed replay: {prompts:#?}"));
    assert!(shown.contains("attempt 1: Fail"), "{shown}");
    assert!(
        shown.contains(BROKEN.trim()),
        "the failed script is shown: {shown}"
    );
    // No Reflector for a replay: no lesson from attempt 1.
    assert_eq!(
        count(
            &fleet,
            "SELECT count(*) FROM lessons l JOIN work_items w ON w.id = l.work_item_id
             WHERE w.run_id = $1 AND l.kind <> 'skill'",
            third.run
        )
        .await,
        0
    );
    fleet.wait_dreamt(third.run).await;
    let entries = ledger(&fleet, third.run).await;
    assert!(
        entries.iter().any(|e| e.1 == "skill" && e.2 == "APPLY"),
        "{entries:?}"
    );
    assert_eq!(skill_on_main(&fleet, CRON).trim(), REPLACEMENT);
    assert_eq!(
        skill_on_main(&fleet, RSYSLOG).trim(),
        "apt-get install -y -q rsyslog",
        "untouched"
    );
    assert!(fleet.main_only_fast_forwards(), "main only fast-forwards");

    fleet
        .stop_agent_and_check_branches(0, &[first.run, second.run, third.run])
        .await;
}
