//! Process-level chaos in the regular suite: coordinator + 8 agent processes,
//! 500 quick tasks, lease holders SIGKILLed and restarted, one agent paused
//! past its TTL. Afterwards every task has exactly one accepted outcome, no
//! event is lost and no stale completion was accepted.

use std::time::Duration;

use fleet_tests::chaos::{run, ChaosPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_killed_and_paused_mid_lease_lose_and_duplicate_nothing() {
    let report = run(ChaosPlan {
        tasks: 500,
        agents: 8,
        sim_work_ms: 25,
        kill_every: Duration::from_millis(300),
        pauses: 1,
        zombie_completions: 3,
        timeout: Duration::from_secs(300),
    })
    .await;
    println!("{}", report.line());
    assert_eq!(report.tasks, 500);
    assert!(
        report.kills >= 5,
        "too few kills to mean anything: {}",
        report.line()
    );
    assert_eq!(report.pauses, 1);
    assert_eq!(report.lost, 0, "{}", report.line());
    assert_eq!(report.duplicated, 0, "{}", report.line());
    assert_eq!(report.stale_accepted, 0, "{}", report.line());
    assert_eq!(
        report.stale_rejected, report.stale_rejected_redis,
        "Postgres and Redis disagree on refused completions"
    );
    assert!(
        !report.recovery_ms.is_empty(),
        "no killed lease was ever re-granted"
    );
    // K3 under SIGKILL: every outcome an agent got accepted has its branch.
    assert!(report.branches_checked > 0, "{}", report.line());
    assert!(
        report.branches_missing.is_empty(),
        "accepted outcomes without their branch: {:?}",
        report.branches_missing
    );
}

/// The checker itself must see a breach: a history with a hole in an agent's
/// sequence, a task completed twice, a completion accepted under an old
/// epoch and a task never finished is reported as exactly that.
#[tokio::test]
async fn checker_reports_lost_duplicated_and_stale_outcomes() {
    use fleet_common::event::{Event, EventBody, EVENT_VERSION};
    use fleet_common::settings::LeaseSettings;
    use fleet_common::{AgentId, Epoch, EventId, Outcome, TaskId};
    use fleet_tests::coord::TestCoordinator;
    use redis::AsyncCommands;

    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let run = c.submit(&["rule_a", "rule_b", "rule_c"]).await.run;
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM work_items WHERE run_id = $1 ORDER BY id")
            .bind(run.0)
            .fetch_all(&c.db.pool)
            .await
            .unwrap();
    let ev = |task: i64, epoch: u64, seq: u64, body: EventBody| Event {
        v: EVENT_VERSION,
        id: EventId::new_v7(),
        run,
        task: TaskId(task),
        rule: "rule".into(),
        agent: AgentId("agent-1".into()),
        incarnation: 1,
        epoch: Epoch(epoch),
        attempt: 0,
        seq,
        ts_ms: 1_700_000_000_000 + seq as i64,
        body,
    };
    let done = EventBody::TaskCompleted {
        outcome: Outcome::AlreadyPassing,
        attempts: 0,
        duration_ms: 1,
    };
    let history = [
        ev(ids[0], 1, 1, EventBody::LeaseAcquired { deadline_ms: 0 }),
        ev(ids[0], 1, 2, done.clone()),
        ev(ids[0], 1, 3, done.clone()),              // completed twice
        ev(ids[2], 1, 3, EventBody::AttemptStarted), // seq 3 again, another id
        ev(ids[1], 3, 4, done.clone()),              // accepted under epoch 3 ...
        ev(ids[1], 5, 6, EventBody::LeaseAcquired { deadline_ms: 0 }), // ... though 5 was granted; seq 5 missing
                                                                       // ids[2] never finishes
    ];
    for e in &history {
        let _: String = c
            .queue
            .conn()
            .xadd(c.queue.keys.events(), "*", &[("e", e.to_json())])
            .await
            .unwrap();
    }
    c.ingester().drain().await.unwrap();
    let report = fleet_tests::chaos::check(&c.db.pool, run.0).await;
    assert_eq!(report.tasks, 3);
    assert_eq!(
        report.duplicated,
        2,
        "one outcome twice + one event applied twice: {}",
        report.line()
    );
    assert_eq!(report.stale_accepted, 1, "{}", report.line());
    assert_eq!(
        report.lost,
        2,
        "one unfinished task + one missing event: {}",
        report.line()
    );
}

/// A rule the planner recorded `needs_target` (no live VM agent, issue 24)
/// is finished without a lease: not lost. A rule left pending still is.
#[tokio::test]
async fn checker_takes_a_rule_that_needed_a_target_as_finished() {
    use fleet_common::settings::LeaseSettings;
    use fleet_common::Outcome;
    use fleet_coordinator::planner::SkillPacks;
    use fleet_tests::coord::{packs_with, TestCoordinator, VM_RULES};
    use fleet_tests::queue::{agent, completion};

    let mut c = TestCoordinator::new(LeaseSettings::default()).await;
    c.packs = SkillPacks::new(packs_with(VM_RULES));
    fleet_coordinator::reconcile::reconcile(&c.db.pool, &c.queue.client)
        .await
        .unwrap();
    let resp = c.submit(&["rule_a", "sysctl_x", "rule_b"]).await;
    assert_eq!(resp.needs_target, 1);
    let lease = c.queue.client.lease(&agent("a1")).await.unwrap().unwrap();
    assert_eq!(lease.task.rule, "rule_a");
    let done = completion(&lease, Outcome::Fixed { attempt: 1 }, 1);
    c.queue.client.complete(&lease, &done).await.unwrap();
    c.ingester().drain().await.unwrap();
    let report = fleet_tests::chaos::check(&c.db.pool, resp.run.0).await;
    assert_eq!(report.tasks, 3);
    assert_eq!(report.lost, 1, "only rule_b: {}", report.line());
}

/// The zombie-write check must see one: a script that started after its
/// lease was reclaimed (or after the task was granted again) is reported;
/// one that started before is not.
#[tokio::test]
async fn checker_reports_a_script_started_after_its_lease_was_lost() {
    use fleet_common::event::{EvalStatus, Event, EventBody, EVENT_VERSION};
    use fleet_common::settings::LeaseSettings;
    use fleet_common::{AgentId, Epoch, EventId, TaskId};
    use fleet_tests::coord::TestCoordinator;
    use redis::AsyncCommands;

    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let run = c.submit(&["rule_a", "rule_b"]).await.run;
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM work_items WHERE run_id = $1 ORDER BY id")
            .bind(run.0)
            .fetch_all(&c.db.pool)
            .await
            .unwrap();
    let t0: i64 = 1_700_000_000_000;
    let ev = |task: i64, agent: &str, epoch: u64, seq: u64, ts_ms: i64, body: EventBody| Event {
        v: EVENT_VERSION,
        id: EventId::new_v7(),
        run,
        task: TaskId(task),
        rule: "rule".into(),
        agent: AgentId(agent.into()),
        incarnation: 1,
        epoch: Epoch(epoch),
        attempt: 1,
        seq,
        ts_ms,
        body,
    };
    let evaluated = |started: i64| EventBody::AttemptEvaluated {
        status: EvalStatus::Fail,
        health_ok: true,
        duration_ms: 1,
        health_failed: vec![],
        contained: None,
        script_started_ms: Some(started),
    };
    let history = [
        // rule_a: reclaimed at t0+1000; one script before, one after.
        ev(
            ids[0],
            "agent-1",
            1,
            1,
            t0,
            EventBody::LeaseAcquired { deadline_ms: 0 },
        ),
        ev(ids[0], "agent-1", 1, 2, t0 + 900, evaluated(t0 + 500)),
        ev(
            ids[0],
            "coordinator",
            1,
            1,
            t0 + 1000,
            EventBody::LeaseReclaimed {
                holder: AgentId("agent-1".into()),
                losses: 1,
            },
        ),
        ev(ids[0], "agent-1", 1, 3, t0 + 1600, evaluated(t0 + 1500)),
        // rule_b: granted again (epoch 2) at t0+2000 without a reclaim, as
        // after Redis came back empty; the old holder starts a script later.
        ev(
            ids[1],
            "agent-2",
            1,
            1,
            t0,
            EventBody::LeaseAcquired { deadline_ms: 0 },
        ),
        ev(
            ids[1],
            "agent-3",
            2,
            1,
            t0 + 2000,
            EventBody::LeaseAcquired { deadline_ms: 0 },
        ),
        ev(ids[1], "agent-2", 1, 2, t0 + 2600, evaluated(t0 + 2500)),
    ];
    for e in &history {
        let _: String = c
            .queue
            .conn()
            .xadd(c.queue.keys.events(), "*", &[("e", e.to_json())])
            .await
            .unwrap();
    }
    c.ingester().drain().await.unwrap();
    let late = fleet_tests::chaos::zombie_writes(&c.db.pool, run.0).await;
    assert_eq!(
        late,
        vec![
            (ids[0], 1, t0 + 1500, t0 + 1000),
            (ids[1], 1, t0 + 2500, t0 + 2000)
        ]
    );
}
