//! Planner and reconciliation against the real Redis and Postgres
//! (DESIGN L1, L6).

mod common;

use common::{submission, TestEnv};
use fleet_common::lease::LeaseError;
use fleet_common::AgentId;
use fleet_coordinator::reaper::Reaper;
use fleet_coordinator::{planner, reconcile, CoordinatorError, Metrics};
use redis::AsyncCommands;

const RULES: [&str; 4] = [
    "audit_rules_immutable",
    "audit_rules_dac_modification_chmod",
    "audit_rules_dac_modification_chown",
    "sshd_disable_root_login",
];

#[tokio::test]
async fn submit_writes_work_items_then_queues_them_with_ordering() {
    let env = TestEnv::new().await;
    reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    let resp = planner::submit(&env.pool, &env.leases, &env.packs, submission(&RULES))
        .await
        .unwrap();
    assert_eq!(resp.tasks, 4);

    type Row = (
        i64,
        String,
        String,
        i32,
        Vec<String>,
        Option<String>,
        Option<i32>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, rule_id, family, ordinal, groups, hold_group, hold_threshold
         FROM work_items WHERE run_id = $1 ORDER BY ordinal",
    )
    .bind(resp.run.0)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].1, "audit_rules_immutable");
    assert_eq!(rows[0].5.as_deref(), Some("audit_rules_*"));
    assert_eq!(rows[0].6, Some(0));
    assert!(rows[0].4.is_empty());
    assert_eq!(rows[1].2, "audit_rules_dac_modification");
    assert_eq!(rows[1].4, vec!["audit_rules_*".to_string()]);
    assert_eq!(rows[3].2, "sshd_disable_root_login");
    assert_eq!(
        rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );

    // Every task is in Redis; the immutable rule waits for its group.
    let mut conn = env.leases.connection();
    for row in &rows {
        let state: Option<String> = conn
            .hget(env.leases.keys().task(fleet_common::TaskId(row.0)), "state")
            .await
            .unwrap();
        let expect = if row.1 == "audit_rules_immutable" {
            "held"
        } else {
            "queued"
        };
        assert_eq!(state.as_deref(), Some(expect), "{}", row.1);
    }
    assert_eq!(env.leases.queue_depth().await.unwrap().ready, 3);

    // Validation errors never touch either store.
    let err = planner::submit(&env.pool, &env.leases, &env.packs, submission(&["a", "a"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CoordinatorError::Invalid(m) if m.contains("duplicate rule id \"a\"")),
        "{err}"
    );
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn reconcile_rebuilds_an_empty_redis_and_epochs_keep_growing() {
    let env = TestEnv::new().await;
    let first = reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    let resp = planner::submit(&env.pool, &env.leases, &env.packs, submission(&RULES))
        .await
        .unwrap();
    let agent = AgentId("agent-1".into());
    let lease = env
        .leases
        .lease(&agent)
        .await
        .unwrap()
        .expect("a ready task");
    assert_eq!(lease.epoch.generation(), first.generation);

    env.wipe_redis().await;
    assert!(env.redis_keys().await.is_empty());
    // Without a generation, nothing is granted (no epoch can be reissued).
    assert!(matches!(
        env.leases.lease(&agent).await,
        Err(LeaseError::NotReady)
    ));

    let second = reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    assert_eq!(second.enqueued, resp.tasks, "every pending task is back");
    assert!(second.generation > first.generation);
    // Idempotent: a second pass finds everything there.
    let third = reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    assert_eq!(third.enqueued, 0);

    // The ordering survives: three ready, the immutable rule still held.
    assert_eq!(env.leases.queue_depth().await.unwrap().ready, 3);
    let mut epochs = Vec::new();
    while let Some(l) = env.leases.lease(&agent).await.unwrap() {
        assert_ne!(l.task.rule, "audit_rules_immutable");
        epochs.push((l.task.task, l.epoch));
    }
    assert_eq!(epochs.len(), 3);
    let again = epochs
        .iter()
        .find(|(t, _)| *t == lease.task.task)
        .expect("the leased task is back");
    assert!(
        again.1 > lease.epoch,
        "epoch {} after reconcile not above {}",
        again.1,
        lease.epoch
    );
    assert_eq!(again.1.generation(), third.generation);
    env.cleanup().await;
}

#[tokio::test]
async fn reaper_reconciles_when_redis_lost_its_generation() {
    let env = TestEnv::new().await;
    reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    planner::submit(&env.pool, &env.leases, &env.packs, submission(&RULES))
        .await
        .unwrap();
    let metrics = Metrics::new();
    let mut reaper = Reaper::new(env.pool.clone(), env.leases.clone(), metrics.clone());
    let tick = reaper.tick().await.unwrap();
    assert!(!tick.reconciled);

    env.wipe_redis().await;
    let tick = reaper.tick().await.unwrap();
    assert!(tick.reconciled);
    assert_eq!(metrics.reconciliations(), 1);
    assert_eq!(env.leases.queue_depth().await.unwrap().ready, 3);
    assert!(env.leases.generation().await.unwrap().is_some());
    let text = metrics.render();
    assert!(
        text.contains("fleet_queue_depth{state=\"ready\"} 3"),
        "{text}"
    );
    env.cleanup().await;
}
