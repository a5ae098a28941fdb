//! The ingester against the real Redis stream and Postgres (DESIGN E2, E3,
//! L3, L7).

mod common;

use std::time::Duration;

use common::{event, submission, TestEnv};
use fleet_common::event::{EvalStatus, LessonRef, MAX_EVENT_BYTES};
use fleet_common::keys::INGEST_GROUP;
use fleet_common::lease::{Completion, Lease};
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, EscalationReason, EventBody, Outcome, RunId, TaskId};
use fleet_coordinator::ingest::{IngestReport, Ingester};
use fleet_coordinator::{planner, reconcile, Metrics};

async fn setup(env: &TestEnv, rules: &[&str]) -> (RunId, Lease) {
    reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    let resp = planner::submit(&env.pool, &env.leases, &env.packs, submission(rules))
        .await
        .unwrap();
    let lease = env
        .leases
        .lease(&AgentId("agent-1".into()))
        .await
        .unwrap()
        .expect("a task");
    (resp.run, lease)
}

fn ingester(env: &TestEnv, metrics: &Metrics) -> Ingester {
    Ingester::new(
        env.pool.clone(),
        env.leases.clone(),
        metrics.clone(),
        "coordinator".into(),
    )
}

async fn xadd(env: &TestEnv, fields: &[(&str, &[u8])]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(env.leases.keys().events()).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    let _: String = cmd.query_async(&mut env.leases.connection()).await.unwrap();
}

async fn xlen(env: &TestEnv) -> u64 {
    redis::cmd("XLEN")
        .arg(env.leases.keys().events())
        .query_async(&mut env.leases.connection())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_delivered_twice_is_applied_once() {
    let env = TestEnv::new().await;
    let (run, lease) = setup(&env, &["sshd_a"]).await;
    let metrics = Metrics::new();
    let ing = ingester(&env, &metrics);
    let started = event(
        run,
        lease.id(),
        "sshd_a",
        lease.epoch,
        1,
        EventBody::AttemptStarted,
    );
    env.leases.append_event(&started).await.unwrap();
    env.leases.append_event(&started).await.unwrap();

    let report = ing.drain().await.unwrap();
    assert_eq!(
        report,
        IngestReport {
            applied: 1,
            duplicates: 1,
            quarantined: 0,
            rejected_completions: 0
        }
    );
    assert_eq!(env.count("SELECT count(*) FROM run_events").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 1);
    assert_eq!(metrics.ingested("attempt_started"), 1);

    // A third copy, after the first batch was acknowledged and trimmed.
    env.leases.append_event(&started).await.unwrap();
    let report = ing.run_once(Duration::from_millis(500)).await.unwrap();
    assert_eq!(report.duplicates, 1);
    assert_eq!(env.count("SELECT count(*) FROM run_events").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn an_attempt_and_its_outcome_reach_postgres_in_any_order() {
    let env = TestEnv::new().await;
    let (run, lease) = setup(&env, &["sshd_a"]).await;
    let metrics = Metrics::new();
    let ing = ingester(&env, &metrics);
    let (task, epoch) = (lease.id(), lease.epoch);
    // Evaluation before the start: the attempt row is created by whichever
    // arrives first.
    let bodies = vec![
        EventBody::LeaseAcquired {
            deadline_ms: lease.deadline_ms,
        },
        EventBody::AttemptEvaluated {
            status: EvalStatus::Pass,
            health_ok: true,
            duration_ms: 5,
            health_failed: vec![],
            contained: None,
            script_started_ms: None,
        },
        EventBody::PromptAssembled {
            lessons: vec![
                LessonRef {
                    id: "l-1".into(),
                    rank: 1,
                    score: 0.9,
                },
                LessonRef {
                    id: "l-2".into(),
                    rank: 2,
                    score: 0.4,
                },
            ],
            prompt_chars: 100,
        },
        EventBody::ScriptProposed {
            script: "echo fix".into(),
            source: Default::default(),
        },
        EventBody::AttemptStarted,
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        env.leases
            .append_event(&event(run, task, "sshd_a", epoch, i as u64 + 1, body))
            .await
            .unwrap();
    }
    let done = event(
        run,
        task,
        "sshd_a",
        epoch,
        6,
        EventBody::TaskCompleted {
            outcome: Outcome::Fixed { attempt: 1 },
            attempts: 1,
            duration_ms: 42,
        },
    );
    assert_eq!(
        env.leases.complete(&lease, &done).await.unwrap(),
        Completion::Accepted
    );

    let report = ing.drain().await.unwrap();
    assert_eq!(report.applied, 6);
    let attempt: (String, String, bool) =
        sqlx::query_as("SELECT script, eval_status, health_ok FROM attempts")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(attempt, ("echo fix".into(), "pass".into(), true));
    assert_eq!(env.count("SELECT count(*) FROM attempts").await, 1);
    assert_eq!(
        env.count("SELECT count(*) FROM lesson_attributions").await,
        2
    );
    let item: (String, String, Option<i32>, i64, String) = sqlx::query_as(
        "SELECT state, outcome, fixed_attempt, accepted_epoch, accepted_event FROM work_items",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        item,
        (
            "done".into(),
            "fixed".into(),
            Some(1),
            epoch.0 as i64,
            done.id.0.clone()
        )
    );
    let status: String = sqlx::query_scalar("SELECT status FROM runs")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(status, "completed", "the run's last task finished it");
    assert!(metrics
        .render()
        .contains("fleet_outcomes_total{outcome=\"fixed\",reason=\"\"} 1"));
    env.cleanup().await;
}

#[tokio::test]
async fn garbage_is_quarantined_and_ingestion_goes_on() {
    let env = TestEnv::new().await;
    let (run, lease) = setup(&env, &["sshd_a"]).await;
    let metrics = Metrics::new();
    let ing = ingester(&env, &metrics);

    let good = event(
        run,
        lease.id(),
        "sshd_a",
        lease.epoch,
        1,
        EventBody::AttemptStarted,
    );
    let mut future: serde_json::Value = serde_json::from_str(&good.to_json()).unwrap();
    future["v"] = 99.into();
    future["id"] = "future-1".into();
    let mut foreign = good.clone();
    foreign.id = fleet_common::EventId::new_v7();
    foreign.task = TaskId(lease.id().0 + 1000);
    let big = vec![b'x'; MAX_EVENT_BYTES + 1];

    xadd(&env, &[("e", b"not json at all")]).await;
    xadd(&env, &[("surprise", &[0xff, 0x00, 0x01])]).await;
    xadd(&env, &[("e", future.to_string().as_bytes())]).await;
    xadd(&env, &[("e", &big)]).await;
    xadd(&env, &[("e", foreign.to_json().as_bytes())]).await;
    env.leases.append_event(&good).await.unwrap();

    let report = ing.drain().await.unwrap();
    assert_eq!(report.quarantined, 5, "{report:?}");
    assert_eq!(
        report.applied, 1,
        "the good event after the garbage is applied"
    );
    let reasons: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, count(*) FROM quarantined_events GROUP BY reason ORDER BY reason",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let expect = [
        ("malformed", 2),
        ("oversized", 1),
        ("unknown_task", 1),
        ("unknown_version", 1),
    ];
    assert_eq!(reasons, expect.map(|(r, n)| (r.to_string(), n)).to_vec());
    let raw: Vec<u8> =
        sqlx::query_scalar("SELECT raw FROM quarantined_events WHERE reason = 'oversized'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(raw.len(), big.len(), "the raw bytes are kept");
    assert_eq!(metrics.quarantined_total(), 5);
    assert_eq!(metrics.quarantined("unknown_task"), 1);

    // Everything was acknowledged and trimmed (L7): only the last acked
    // entry may remain as the trim boundary.
    let pending: (u64,) = {
        let v: redis::Value = redis::cmd("XPENDING")
            .arg(env.leases.keys().events())
            .arg(INGEST_GROUP)
            .query_async(&mut env.leases.connection())
            .await
            .unwrap();
        match v {
            redis::Value::Array(items) => (redis::from_redis_value(items[0].clone()).unwrap(),),
            other => panic!("unexpected XPENDING reply {other:?}"),
        }
    };
    assert_eq!(pending.0, 0);
    assert!(
        xlen(&env).await <= 1,
        "stream not trimmed: {}",
        xlen(&env).await
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_restarted_ingester_reapplies_what_it_had_not_acknowledged() {
    let env = TestEnv::new().await;
    let (run, lease) = setup(&env, &["sshd_a"]).await;
    let metrics = Metrics::new();
    let ing = ingester(&env, &metrics);
    ing.drain().await.unwrap(); // creates the group
    env.leases
        .append_event(&event(
            run,
            lease.id(),
            "sshd_a",
            lease.epoch,
            1,
            EventBody::AttemptStarted,
        ))
        .await
        .unwrap();
    // A previous incarnation read the entry and died before its commit.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(INGEST_GROUP)
        .arg("coordinator")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(env.leases.keys().events())
        .arg(">")
        .query_async(&mut env.leases.connection())
        .await
        .unwrap();
    let report = ingester(&env, &metrics)
        .run_once(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(env.count("SELECT count(*) FROM run_events").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn a_stale_completion_is_recorded_and_never_counted() {
    let settings = LeaseSettings {
        ttl_ms: 300,
        renew_every_ms: 100,
        safety_margin_ms: 100,
        ..Default::default()
    };
    let env = TestEnv::with_settings(settings).await;
    let (run, lease) = setup(&env, &["sshd_a"]).await;
    let metrics = Metrics::new();
    let ing = ingester(&env, &metrics);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let done = event(
        run,
        lease.id(),
        "sshd_a",
        lease.epoch,
        1,
        EventBody::TaskCompleted {
            outcome: Outcome::Escalated {
                reason: EscalationReason::Health,
            },
            attempts: 1,
            duration_ms: 1,
        },
    );
    assert!(matches!(
        env.leases.complete(&lease, &done).await.unwrap(),
        Completion::Rejected(_)
    ));

    let report = ing.drain().await.unwrap();
    assert_eq!(report.rejected_completions, 1);
    // The only event applied is the loss the refusal recorded.
    assert_eq!(report.applied, 1);
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM run_events WHERE rejected IS NULL")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(kinds, ["lease_reclaimed"]);
    assert_eq!(metrics.stale_completions(), 1);
    assert_eq!(metrics.outcomes_total(), 0);
    let rejected: Option<String> =
        sqlx::query_scalar("SELECT rejected FROM run_events WHERE kind = 'task_completed'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(rejected.as_deref(), Some("expired"));
    let state: String = sqlx::query_scalar("SELECT state FROM work_items")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(state, "pending");

    // The task is leased again and its real completion is the one counted.
    let again = env
        .leases
        .lease(&AgentId("agent-2".into()))
        .await
        .unwrap()
        .expect("requeued");
    assert!(again.epoch > lease.epoch);
    let ok = event(
        run,
        again.id(),
        "sshd_a",
        again.epoch,
        1,
        EventBody::TaskCompleted {
            outcome: Outcome::AlreadyPassing,
            attempts: 0,
            duration_ms: 1,
        },
    );
    assert_eq!(
        env.leases.complete(&again, &ok).await.unwrap(),
        Completion::Accepted
    );
    ing.drain().await.unwrap();
    assert_eq!(metrics.outcomes_total(), 1);
    assert_eq!(metrics.duplicate_outcomes(), 0);
    let accepted: i64 = sqlx::query_scalar("SELECT accepted_epoch FROM work_items")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(accepted, again.epoch.0 as i64);
    env.cleanup().await;
}

#[tokio::test]
async fn a_second_accepted_outcome_is_counted_as_a_protocol_failure() {
    let env = TestEnv::new().await;
    let (run, lease) = setup(&env, &["sshd_a"]).await;
    let metrics = Metrics::new();
    let ing = ingester(&env, &metrics);
    let body = || EventBody::TaskCompleted {
        outcome: Outcome::AlreadyPassing,
        attempts: 0,
        duration_ms: 1,
    };
    // Two different accepted completions for one task (what a Redis restored
    // from an old snapshot could produce) must not both count.
    env.leases
        .append_event(&event(run, lease.id(), "sshd_a", lease.epoch, 1, body()))
        .await
        .unwrap();
    env.leases
        .append_event(&event(run, lease.id(), "sshd_a", lease.epoch, 2, body()))
        .await
        .unwrap();
    ing.drain().await.unwrap();
    assert_eq!(metrics.outcomes_total(), 1);
    assert_eq!(metrics.duplicate_outcomes(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn an_event_postgres_refuses_is_isolated_and_quarantined() {
    let env = TestEnv::new().await;
    let (run, lease) = setup(&env, &["sshd_a"]).await;
    let metrics = Metrics::new();
    // Stands in for any value the decoder lets through but Postgres refuses.
    sqlx::query("ALTER TABLE run_events ADD CONSTRAINT no_evil CHECK (agent_id <> 'evil')")
        .execute(&env.pool)
        .await
        .unwrap();
    let before = event(
        run,
        lease.id(),
        "sshd_a",
        lease.epoch,
        1,
        EventBody::AttemptStarted,
    );
    let mut evil = event(
        run,
        lease.id(),
        "sshd_a",
        lease.epoch,
        2,
        EventBody::LeaseReleased,
    );
    evil.agent = AgentId("evil".into());
    let after = event(
        run,
        lease.id(),
        "sshd_a",
        lease.epoch,
        3,
        EventBody::LeaseReleased,
    );
    for e in [&before, &evil, &after] {
        env.leases.append_event(e).await.unwrap();
    }
    let report = ingester(&env, &metrics).drain().await.unwrap();
    assert_eq!((report.applied, report.quarantined), (2, 1), "{report:?}");
    let reason: String = sqlx::query_scalar("SELECT reason FROM quarantined_events")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(reason, "refused_by_postgres");
    assert_eq!(metrics.quarantined("refused_by_postgres"), 1);
    env.cleanup().await;
}
