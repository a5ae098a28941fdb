//! Rebuilding the Redis queue from Postgres (DESIGN L6) without ever
//! reissuing an old epoch (L1).

use fleet_common::lease::LeaseError;
use fleet_common::settings::LeaseSettings;
use fleet_common::Outcome;
use fleet_coordinator::reconcile::reconcile;
use fleet_tests::coord::TestCoordinator;
use fleet_tests::queue::{agent, completion};

#[tokio::test]
async fn an_empty_redis_is_rebuilt_from_postgres_with_higher_epochs() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let rules = [
        "sshd_set_idle_timeout",
        "sshd_set_keepalive",
        "package_aide_installed",
    ];
    let run = c.submit(&rules).await;
    assert_eq!(run.tasks, 3);
    // The planner enqueues; the first reconciliation installs a generation.
    reconcile(&c.db.pool, &c.queue.client).await.unwrap();
    let q = &c.queue.client;

    let done = q.lease(&agent("a1")).await.unwrap().unwrap();
    q.complete(&done, &completion(&done, Outcome::AlreadyPassing, 1))
        .await
        .unwrap();
    c.ingester().drain().await.unwrap();
    let held = q.lease(&agent("a1")).await.unwrap().unwrap();

    c.queue.wipe().await; // Redis restarted empty
    assert!(matches!(
        q.lease(&agent("a1")).await,
        Err(LeaseError::NotReady)
    ));

    let report = reconcile(&c.db.pool, &c.queue.client).await.unwrap();
    assert_eq!(report.enqueued, 2, "the finished task is not brought back");
    let mut regranted = Vec::new();
    while let Some(l) = q.lease(&agent("a2")).await.unwrap() {
        assert!(
            l.epoch > held.epoch && l.epoch > done.epoch,
            "{:?} reissued an old epoch",
            l.epoch
        );
        regranted.push(l.task.rule);
    }
    regranted.sort();
    assert_eq!(regranted.len(), 2);
    assert!(!regranted.contains(&done.task.rule));
    // The holder from before the loss can no longer complete.
    let verdict = q
        .complete(&held, &completion(&held, Outcome::AlreadyPassing, 2))
        .await
        .unwrap();
    assert!(!verdict.is_accepted());
}

#[tokio::test]
async fn reconciling_a_healthy_redis_changes_nothing_but_the_generation() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    c.submit(&["sshd_set_idle_timeout", "sshd_set_keepalive"])
        .await;
    let first = reconcile(&c.db.pool, &c.queue.client).await.unwrap();
    let held = c.queue.client.lease(&agent("a1")).await.unwrap().unwrap();
    let second = reconcile(&c.db.pool, &c.queue.client).await.unwrap();
    assert_eq!(second.enqueued, 0, "tasks Redis knows are left alone");
    assert!(second.generation > first.generation);
    // The lease in flight survives and a new grant outranks it.
    assert!(c.queue.client.renew(&held).await.is_ok());
    let next = c.queue.client.lease(&agent("a2")).await.unwrap().unwrap();
    assert!(next.epoch > held.epoch);
}
