//! Rules that need a VM target (issue 24, DESIGN T7): a pack's
//! `[[requires]]` puts them in their own ready set, leased only by agents
//! whose targets are VMs; with none live at submission the planner records
//! them `needs_target` (never leased, never escalated, never compared) and
//! the run completes with the report saying so.
//!
//! In process (planner, reconciliation and ingester on a test schema), then
//! end to end with the real binaries: simulated agents are container
//! agents; a stand-in agent on the real `LeaseClient` claims VM targets.

use std::time::{Duration, Instant};

use fleet_common::api::{RuleOutcome, RunReport};
use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use fleet_common::{Outcome, RunId, TargetClass};
use fleet_coordinator::planner::SkillPacks;
use fleet_coordinator::reconcile::reconcile;
use fleet_coordinator::status::run_status;
use fleet_tests::coord::{packs_with, TestCoordinator, VM_RULES};
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::queue::{agent, completion};

const SSHD: &str = "sshd_set_idle_timeout";
const SYSCTL: &str = "sysctl_kernel_randomize_va_space";
const SERVICE: &str = "service_cron_enabled";

async fn coordinator() -> TestCoordinator {
    let mut c = TestCoordinator::new(LeaseSettings::default()).await;
    c.packs = SkillPacks::new(packs_with(VM_RULES));
    c
}

/// (state, outcome, reason, target_need, accepted_agent) of `rule` in `run`.
async fn item(
    c: &TestCoordinator,
    run: RunId,
    rule: &str,
) -> (
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
) {
    sqlx::query_as(
        "SELECT state, outcome, reason, target_need, accepted_agent FROM work_items
         WHERE run_id = $1 AND rule_id = $2",
    )
    .bind(run.0)
    .bind(rule)
    .fetch_one(&c.db.pool)
    .await
    .unwrap()
}

/// Events stored for `rule`'s work item in `run`.
async fn events_of(pool: &sqlx::PgPool, run: RunId, rule: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT e.kind, e.agent_id FROM run_events e JOIN work_items w ON w.id = e.work_item_id
         WHERE w.run_id = $1 AND w.rule_id = $2 ORDER BY e.stream_id",
    )
    .bind(run.0)
    .bind(rule)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn without_a_live_vm_agent_vm_rules_are_recorded_needs_target_and_the_run_completes() {
    let c = coordinator().await;
    reconcile(&c.db.pool, &c.queue.client).await.unwrap();
    // A container agent is alive; that is not enough.
    c.queue.client.touch_agent(&agent("c-1")).await.unwrap();
    let resp = c.submit(&[SSHD, SYSCTL, SERVICE]).await;
    assert_eq!((resp.tasks, resp.needs_target), (3, 2));
    for rule in [SYSCTL, SERVICE] {
        assert_eq!(
            item(&c, resp.run, rule).await,
            (
                "done".into(),
                Some("needs_target".into()),
                Some("vm".into()),
                "vm".into(),
                None
            ),
            "{rule}"
        );
    }
    assert_eq!(item(&c, resp.run, SSHD).await.3, "container");
    let depth = c.queue.client.queue_depth().await.unwrap();
    assert_eq!((depth.ready, depth.ready_vm), (1, 0), "never queued");

    // Even an agent on VMs that comes later finds only the rule queued.
    let vm = c
        .queue
        .peer(LeaseSettings::default())
        .await
        .with_target_class(TargetClass::Vm);
    let lease = vm.lease(&agent("vm-1")).await.unwrap().unwrap();
    assert_eq!(lease.task.rule, SSHD);
    assert!(vm.lease(&agent("vm-1")).await.unwrap().is_none());
    vm.complete(
        &lease,
        &completion(&lease, Outcome::Fixed { attempt: 1 }, 1),
    )
    .await
    .unwrap();
    c.ingester().drain().await.unwrap();

    let s = run_status(&c.db.pool, resp.run).await.unwrap();
    assert_eq!(s.status, "completed");
    assert_eq!(
        (s.finished, s.fixed, s.escalated, s.needs_target),
        (3, 1, 0, 2)
    );
    assert!(s.escalated_by_reason.is_empty(), "never escalated");
    assert_eq!(s.fix_rate(), Some(1.0), "out of the fix rate");
    assert_eq!(
        s.needs_target_lines(),
        [format!("needs a vm target: 2 ({SERVICE}, {SYSCTL})")]
    );
    for rule in [SYSCTL, SERVICE] {
        assert!(
            events_of(&c.db.pool, resp.run, rule).await.is_empty(),
            "{rule} leased"
        );
    }
}

#[tokio::test]
async fn with_a_live_vm_agent_vm_rules_wait_for_it_and_reconciliation_keeps_them_apart() {
    let c = coordinator().await;
    reconcile(&c.db.pool, &c.queue.client).await.unwrap();
    let vm = c
        .queue
        .peer(LeaseSettings::default())
        .await
        .with_target_class(TargetClass::Vm);
    vm.touch_agent(&agent("vm-1")).await.unwrap();
    let resp = c.submit(&[SSHD, SYSCTL, SERVICE]).await;
    assert_eq!((resp.tasks, resp.needs_target), (3, 0));
    let depth = c.queue.client.queue_depth().await.unwrap();
    assert_eq!((depth.ready, depth.ready_vm), (3, 2));

    // A container agent gets the common rule and nothing else.
    let container = &c.queue.client;
    let held = container.lease(&agent("c-1")).await.unwrap().unwrap();
    assert_eq!(held.task.rule, SSHD);
    assert!(container.lease(&agent("c-1")).await.unwrap().is_none());

    // Redis comes back empty: the pending VM rules go back to their set.
    c.queue.wipe().await;
    let report = reconcile(&c.db.pool, &c.queue.client).await.unwrap();
    assert_eq!(report.enqueued, 3);
    let depth = c.queue.client.queue_depth().await.unwrap();
    assert_eq!((depth.ready, depth.ready_vm), (3, 2));
    let sshd = container.lease(&agent("c-1")).await.unwrap().unwrap();
    assert_eq!(sshd.task.rule, SSHD);
    assert!(container.lease(&agent("c-1")).await.unwrap().is_none());

    let mut seq = 0;
    let mut leased = Vec::new();
    while let Some(l) = vm.lease(&agent("vm-1")).await.unwrap() {
        seq += 1;
        leased.push(l.task.rule.clone());
        let done = completion(&l, Outcome::Fixed { attempt: 1 }, seq);
        assert!(vm.complete(&l, &done).await.unwrap().is_accepted());
    }
    leased.sort();
    assert_eq!(leased, [SERVICE, SYSCTL]);
    let done = completion(&sshd, Outcome::Fixed { attempt: 1 }, 1);
    assert!(container
        .complete(&sshd, &done)
        .await
        .unwrap()
        .is_accepted());
    c.ingester().drain().await.unwrap();
    let s = run_status(&c.db.pool, resp.run).await.unwrap();
    assert_eq!(
        (s.status.as_str(), s.fixed, s.needs_target),
        ("completed", 3, 0)
    );
    for rule in [SYSCTL, SERVICE] {
        assert_eq!(item(&c, resp.run, rule).await.4.as_deref(), Some("vm-1"));
    }
}

async fn metrics(fleet: &Fleet) -> String {
    reqwest::get(format!("{}/metrics", fleet.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Leases as a VM agent until it holds `n` leases (touching its presence
/// as an agent does) and completes each as fixed; returns their rules.
async fn stand_in_vm_agent(leases: &LeaseClient, n: usize) -> Vec<String> {
    let me = agent("vm-standin");
    let start = Instant::now();
    let mut rules = Vec::new();
    while rules.len() < n {
        assert!(start.elapsed() < Duration::from_secs(30), "only {rules:?}");
        leases.touch_agent(&me).await.unwrap();
        let Some(l) = leases.lease(&me).await.unwrap() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        rules.push(l.task.rule.clone());
        let done = completion(&l, Outcome::Fixed { attempt: 1 }, rules.len() as u64);
        assert!(leases.complete(&l, &done).await.unwrap().is_accepted());
    }
    rules.sort();
    rules
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_container_agents_reports_its_vm_rules_and_a_vm_agent_alone_takes_them_later() {
    let fleet = Fleet::start(FleetOpts {
        agents: 1,
        skill_packs: Some(packs_with(VM_RULES)),
        ..Default::default()
    })
    .await;
    let rules: Vec<String> = [SSHD, "sshd_set_keepalive", SYSCTL, SERVICE]
        .iter()
        .map(|r| r.to_string())
        .collect();

    // Run 1: only a simulated (container) agent.
    let first = fleet.submit_pack("sim-demo", rules.clone()).await;
    assert_eq!(first.needs_target, 2);
    let s = fleet
        .wait_completed(first.run, Duration::from_secs(60))
        .await;
    assert_eq!((s.finished, s.needs_target), (4, 2));
    assert_eq!(s.escalated_by_reason.get("needs_target"), None);
    let report: RunReport = fleet.report(first.run).await;
    for rule in [SYSCTL, SERVICE] {
        let row = report.rule(rule).unwrap();
        assert_eq!(row.outcome, RuleOutcome::NeedsTarget, "{rule}");
        assert_eq!(row.reason.as_deref(), Some("vm"));
        assert!(
            events_of(&fleet.db.pool, first.run, rule).await.is_empty(),
            "{rule} was leased or escalated"
        );
    }
    let line = format!("needs a vm target: 2 ({SERVICE}, {SYSCTL})");
    let run = first.run.to_string();
    for args in [vec!["status", run.as_str()], vec!["report", run.as_str()]] {
        let (ok, out, err) = fleet.cli(&args);
        assert!(ok, "{args:?}: {err}");
        assert!(out.contains(&line), "{args:?}:\n{out}");
    }
    let (ok, out, _) = fleet.cli(&["report", &run]);
    assert!(ok && out.contains("needs_target"), "{out}");
    let (ok, out, err) = fleet.cli(&["status", &run, "--summary-line"]);
    assert!(ok && out.contains(" needs_target=2"), "{out}{err}");
    assert!(
        metrics(&fleet)
            .await
            .contains("fleet_outcomes_total{outcome=\"needs_target\",reason=\"vm\"} 2"),
        "the outcome is counted by kind"
    );
    fleet.wait_dreamt(first.run).await;

    // Run 2: a VM agent is live; only it leases the VM rules, the
    // simulated agent the rest.
    let vm = fleet.leases.clone().with_target_class(TargetClass::Vm);
    vm.touch_agent(&agent("vm-standin")).await.unwrap();
    let second = fleet.submit_pack("sim-demo", rules.clone()).await;
    assert_eq!(second.needs_target, 0);
    assert_eq!(stand_in_vm_agent(&vm, 2).await, [SERVICE, SYSCTL]);
    let s = fleet
        .wait_completed(second.run, Duration::from_secs(60))
        .await;
    assert_eq!(s.needs_target, 0);
    for rule in [SYSCTL, SERVICE] {
        let agents: Vec<String> = events_of(&fleet.db.pool, second.run, rule)
            .await
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        assert_eq!(agents, ["vm-standin"], "{rule}");
    }
    for rule in [SSHD, "sshd_set_keepalive"] {
        let by_sim = events_of(&fleet.db.pool, second.run, rule).await;
        assert!(
            by_sim.iter().all(|(_, a)| a == "agent-1"),
            "{rule}: {by_sim:?}"
        );
    }
    // Fixed now, never tried then: no win (DESIGN D6).
    fleet.wait_dreamt(second.run).await;
    let c = fleet.status(second.run).await.comparison.expect("compared");
    assert_eq!(c.previous_run, first.run);
    assert!(
        c.changes
            .iter()
            .all(|ch| ch.rule != SYSCTL && ch.rule != SERVICE),
        "{:?}",
        c.changes
    );
    assert_eq!(c.previous_not_comparable, 2);
    // The roster says which agents have VM targets.
    let (ok, out, _) = fleet.cli(&["agents"]);
    assert!(ok, "{out}");
    // Columns: agent, host, version, alive, targets, last seen.
    let class_of = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
    };
    assert_eq!(class_of("vm-standin").as_deref(), Some("vm"), "{out}");
    assert_eq!(class_of("agent-1").as_deref(), Some("container"), "{out}");
    fleet.shutdown().await;
}
