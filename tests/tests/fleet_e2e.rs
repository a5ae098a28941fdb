//! End to end with the real binaries: coordinator + 2 agents run the demo
//! pack; every rule gets the outcome the deterministic sim predicts, the
//! ordering constraint holds, and everything shuts down cleanly on SIGTERM.

use std::collections::HashMap;
use std::time::Duration;

use fleet_agent::sim::expected_outcome;
use fleet_common::{Budgets, Outcome};
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::procs::repo_root;

fn demo_rules() -> Vec<String> {
    std::fs::read_to_string(repo_root().join("skill-packs/sim-demo/rules.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_run_gets_the_predicted_outcome_for_every_rule() {
    let mut fleet = Fleet::start(FleetOpts {
        agents: 2,
        sim_work_ms: 5,
        lease_loss_budget: 5,
        ..Default::default()
    })
    .await;
    let main_before = fleet.knowledge_main();
    let rules = demo_rules();
    let run = fleet.submit(rules.clone()).await;
    let status = fleet.wait_completed(run, Duration::from_secs(120)).await;
    assert_eq!(status.total as usize, rules.len());

    let rows: Vec<(String, String, Option<String>, Option<i32>)> = sqlx::query_as(
        "SELECT rule_id, outcome, reason, fixed_attempt FROM work_items WHERE run_id = $1",
    )
    .bind(run.0)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    let got: HashMap<String, (String, Option<String>, Option<i32>)> = rows
        .into_iter()
        .map(|(r, o, why, a)| (r, (o, why, a)))
        .collect();
    for rule in &rules {
        let (outcome, reason, attempt) = &got[rule];
        let want = expected_outcome(rule, &Budgets::default());
        assert_eq!(outcome, want.kind(), "{rule}");
        assert_eq!(
            reason.as_deref(),
            want.reason().map(|r| r.as_str()),
            "{rule}"
        );
        if let Outcome::Fixed { attempt: n } = want {
            assert_eq!(*attempt, Some(n as i32), "{rule}");
        }
    }
    let by_kind = |k: &str| got.values().filter(|(o, _, _)| o == k).count() as u64;
    assert_eq!(status.fixed, by_kind("fixed"));
    assert_eq!(status.escalated, by_kind("escalated"));
    assert_eq!(status.already_passing, by_kind("already_passing"));
    let first_try = rules
        .iter()
        .filter(|r| expected_outcome(r, &Budgets::default()) == Outcome::Fixed { attempt: 1 })
        .count() as u64;
    assert_eq!(status.fixed_first_try, first_try);

    // audit_rules_immutable is leased only after every other audit rule's
    // outcome was accepted (the pack's ordering constraint). Both times come
    // from agent clocks on this one host.
    let (members, violations): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT w.id), count(*) FILTER (WHERE g.ts < c.ts)
         FROM work_items w
         JOIN run_events c ON c.work_item_id = w.id AND c.kind = 'task_completed' AND c.rejected IS NULL
         JOIN work_items imm ON imm.run_id = w.run_id AND imm.rule_id = 'audit_rules_immutable'
         JOIN run_events g ON g.work_item_id = imm.id AND g.kind = 'lease_acquired'
         WHERE w.run_id = $1 AND w.rule_id LIKE 'audit\\_rules\\_%' AND w.id <> imm.id",
    )
    .bind(run.0)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    let audit_members = rules
        .iter()
        .filter(|r| r.starts_with("audit_rules_") && *r != "audit_rules_immutable")
        .count();
    assert_eq!(
        members as usize, audit_members,
        "the check must cover every audit rule"
    );
    assert_eq!(
        violations, 0,
        "audit_rules_immutable was leased before its group finished"
    );

    for slot in &mut fleet.agents {
        let agent = slot.take().unwrap();
        let name = agent.name.clone();
        let status = agent.terminate(Duration::from_secs(10)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} did not exit cleanly on SIGTERM: {status:?}"
        );
    }

    // K2/K3 end to end: each accepted outcome has its lease's branch with
    // result.json (and skills/<rule>.sh when fixed), pushed by its agent
    // over the authenticated transport; main untouched by agents; no
    // worktree left in any agent's cache.
    let (checked, missing) = fleet.missing_lease_branches(run).await;
    assert_eq!(
        checked,
        rules.len(),
        "every outcome was accepted from an agent"
    );
    assert!(
        missing.is_empty(),
        "missing in the knowledge repo: {missing:?}"
    );
    // The dream stage may have moved main after the run (ranking,
    // promotions); only ever forward and only as the coordinator.
    let (committers, forward) = fleet.main_committers_since(&main_before);
    assert!(forward, "main was rewritten, not fast-forwarded");
    assert!(
        committers.iter().all(|c| c == "fleet-coordinator"),
        "something other than the coordinator moved main: {committers:?}"
    );
    for i in 0..fleet.opts.agents {
        let worktrees = fleet.agent_worktrees(i);
        assert_eq!(
            worktrees.len(),
            1,
            "agent {i} left worktrees behind: {worktrees:?}"
        );
    }

    let coordinator = fleet.coordinator.take().unwrap();
    let status = coordinator.terminate(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "coordinator did not exit cleanly: {status:?}"
    );
}
