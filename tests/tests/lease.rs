//! The lease protocol against a real Redis (DESIGN L1–L5, L7).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleet_common::event::{EventBody, RejectReason};
use fleet_common::lease::{Completion, LeaseError, Renewal};
use fleet_common::settings::LeaseSettings;
use fleet_common::{Epoch, EscalationReason, Outcome, TaskId};
use fleet_tests::queue::{agent, completion, fast_settings, queued, tasks, TestQueue};
use redis::AsyncCommands;
use tokio::sync::Mutex;

const FIXED: Outcome = Outcome::Fixed { attempt: 1 };

/// `event` records that `lease` was taken back, as the holder's n-th loss.
fn assert_reclaimed(event: &fleet_common::Event, lease: &fleet_common::lease::Lease, losses: u32) {
    assert_eq!(event.agent.as_str(), "coordinator");
    assert_eq!((event.task, event.epoch), (lease.id(), lease.epoch));
    assert_eq!(
        event.body,
        EventBody::LeaseReclaimed {
            holder: lease.agent.clone(),
            losses
        }
    );
}

async fn ready_queue(settings: LeaseSettings, n: i64) -> TestQueue {
    let q = TestQueue::new(settings).await;
    assert_eq!(
        q.client
            .enqueue(&tasks(1, 1, n, settings.lease_loss_budget))
            .await
            .unwrap(),
        n as u64
    );
    q.client.set_generation(1).await.unwrap();
    q
}

#[tokio::test]
async fn grant_renew_complete_appends_the_outcome_atomically() {
    let q = ready_queue(LeaseSettings::default(), 1).await;
    let lease = q.client.lease(&agent("a1")).await.unwrap().expect("a task");
    assert_eq!(lease.epoch, Epoch((1 << Epoch::GRANT_BITS) | 1));
    assert!(matches!(
        q.client.renew(&lease).await.unwrap(),
        Renewal::Renewed { .. }
    ));
    let done = completion(&lease, FIXED, 1);
    assert_eq!(
        q.client.complete(&lease, &done).await.unwrap(),
        Completion::Accepted
    );
    assert_eq!(
        q.task_field(lease.id(), "state").await.as_deref(),
        Some("done")
    );
    let stream = q.stream().await;
    assert_eq!(stream, vec![(done.clone(), None)]);
    // A retried completion (reply lost) is recognised, not appended again.
    assert_eq!(
        q.client.complete(&lease, &done).await.unwrap(),
        Completion::Duplicate
    );
    assert_eq!(q.stream().await.len(), 1);
    assert!(q.client.lease(&agent("a1")).await.unwrap().is_none());
}

#[tokio::test]
async fn stale_completion_is_rejected_recorded_and_counted() {
    let q = ready_queue(fast_settings(300, 5), 1).await;
    let zombie = q.client.lease(&agent("zombie")).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The next lease call reclaims the expired lease itself and re-grants it.
    let live = q
        .client
        .lease(&agent("live"))
        .await
        .unwrap()
        .expect("re-granted");
    assert_eq!(live.id(), zombie.id());
    assert!(live.epoch > zombie.epoch, "epochs must grow per grant (L1)");

    let stale = completion(&zombie, FIXED, 1);
    let verdict = q.client.complete(&zombie, &stale).await.unwrap();
    assert_eq!(verdict, Completion::Rejected(RejectReason::StaleEpoch));
    assert!(matches!(
        q.client.renew(&zombie).await.unwrap(),
        Renewal::Refused(RejectReason::StaleEpoch)
    ));
    assert_eq!(q.stat("stale_rejected").await, 1);

    let good = completion(&live, FIXED, 1);
    assert_eq!(
        q.client.complete(&live, &good).await.unwrap(),
        Completion::Accepted
    );
    let stream = q.stream().await;
    assert_eq!(stream.len(), 3);
    assert_reclaimed(&stream[0].0, &zombie, 1);
    assert_eq!(stream[1], (stale, Some("stale_epoch".into())));
    assert_eq!(stream[2], (good, None));
}

#[tokio::test]
async fn completion_after_redis_deadline_is_rejected_even_before_a_reap() {
    let q = ready_queue(fast_settings(200, 5), 1).await;
    let lease = q.client.lease(&agent("slow")).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let verdict = q
        .client
        .complete(&lease, &completion(&lease, FIXED, 1))
        .await
        .unwrap();
    assert_eq!(verdict, Completion::Rejected(RejectReason::Expired));
    // The refusal reclaimed it: the task is leasable again, one loss counted.
    assert_eq!(
        q.task_field(lease.id(), "losses").await.as_deref(),
        Some("1")
    );
    assert!(q.client.lease(&agent("other")).await.unwrap().is_some());
}

#[tokio::test]
async fn reaper_requeues_then_dead_letters_as_lease_lost() {
    let settings = fast_settings(150, 2);
    let q = ready_queue(settings, 1).await;
    let first = q.client.lease(&agent("a1")).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = q.client.reap(100).await.unwrap();
    assert_eq!((r.requeued, r.dead_lettered), (1, 0));
    assert_eq!(q.stat("reclaimed").await, 1);

    let second = q.client.lease(&agent("a2")).await.unwrap().unwrap();
    assert!(second.epoch > first.epoch);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = q.client.reap(100).await.unwrap();
    assert_eq!(
        (r.requeued, r.dead_lettered),
        (0, 1),
        "budget of 2 losses is spent"
    );
    assert_eq!(
        q.task_field(second.id(), "state").await.as_deref(),
        Some("dead")
    );
    assert!(q.client.lease(&agent("a3")).await.unwrap().is_none());

    let stream = q.stream().await;
    assert_eq!(stream.len(), 3, "two losses, then the dead-letter outcome");
    assert_reclaimed(&stream[0].0, &first, 1);
    assert_reclaimed(&stream[1].0, &second, 2);
    let (event, rejected) = &stream[2];
    assert_eq!(rejected, &None);
    assert_eq!(event.agent.as_str(), "coordinator");
    assert_eq!(event.epoch, second.epoch);
    assert_eq!(
        event.body,
        EventBody::TaskCompleted {
            outcome: Outcome::Escalated {
                reason: EscalationReason::LeaseLost
            },
            attempts: 0,
            duration_ms: 0
        }
    );
    // The dead-lettered task's holder cannot complete it any more.
    let late = q
        .client
        .complete(&second, &completion(&second, FIXED, 1))
        .await
        .unwrap();
    assert_eq!(late, Completion::Rejected(RejectReason::NotLeased));
}

#[tokio::test]
async fn release_hands_back_without_counting_a_loss() {
    let q = ready_queue(LeaseSettings::default(), 1).await;
    let lease = q.client.lease(&agent("a1")).await.unwrap().unwrap();
    assert!(q.client.release(&lease).await.unwrap());
    assert!(
        !q.client.release(&lease).await.unwrap(),
        "second release holds nothing"
    );
    assert_eq!(
        q.task_field(lease.id(), "losses").await.as_deref(),
        Some("0")
    );
    let again = q.client.lease(&agent("a2")).await.unwrap().unwrap();
    assert!(again.epoch > lease.epoch);
    let verdict = q
        .client
        .complete(&lease, &completion(&lease, FIXED, 1))
        .await
        .unwrap();
    assert_eq!(verdict, Completion::Rejected(RejectReason::StaleEpoch));
}

#[tokio::test]
async fn epochs_stay_monotonic_when_redis_comes_back_empty() {
    let q = ready_queue(LeaseSettings::default(), 3).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let l = q.client.lease(&agent("a1")).await.unwrap().unwrap();
        assert!(q.client.release(&l).await.unwrap());
        seen.push(l.epoch);
    }
    q.wipe().await;
    // Until reconciled, nothing is granted: an old epoch could come back.
    assert!(matches!(
        q.client.lease(&agent("a1")).await,
        Err(LeaseError::NotReady)
    ));
    // Reconciliation: tasks re-enqueued from the source of truth, then a
    // higher generation installed (the coordinator takes it from Postgres).
    q.client.enqueue(&tasks(1, 1, 3, 5)).await.unwrap();
    q.client.set_generation(2).await.unwrap();
    let after = q.client.lease(&agent("a1")).await.unwrap().unwrap();
    assert!(
        seen.iter().all(|e| after.epoch > *e),
        "{after:?} not above {seen:?}"
    );
    assert_eq!(after.epoch.generation(), 2);
}

#[tokio::test]
async fn generation_never_goes_back() {
    let q = TestQueue::new(LeaseSettings::default()).await;
    assert_eq!(q.client.generation().await.unwrap(), None);
    assert_eq!(q.client.set_generation(5).await.unwrap(), 5);
    assert_eq!(q.client.set_generation(3).await.unwrap(), 5);
    assert_eq!(q.client.generation().await.unwrap(), Some(5));
}

#[tokio::test]
async fn held_rule_waits_for_its_group_to_finish() {
    let q = TestQueue::new(LeaseSettings::default()).await;
    let mut members = tasks(1, 1, 2, 5);
    for m in &mut members {
        m.groups = vec!["audit_rules_*".into()];
    }
    let mut held = queued(1, 3, "audit_rules_immutable", 5);
    held.hold = Some(("audit_rules_*".into(), 0));
    held.priority = 0; // would lease first if it were not held
    let mut all = members.clone();
    all.push(held);
    q.client.enqueue(&all).await.unwrap();
    q.client.set_generation(1).await.unwrap();

    let a = q.client.lease(&agent("a1")).await.unwrap().unwrap();
    let b = q.client.lease(&agent("a2")).await.unwrap().unwrap();
    assert_ne!(a.task.rule, "audit_rules_immutable");
    assert_ne!(b.task.rule, "audit_rules_immutable");
    assert!(
        q.client.lease(&agent("a3")).await.unwrap().is_none(),
        "held rule leased early"
    );
    q.client
        .complete(&a, &completion(&a, FIXED, 1))
        .await
        .unwrap();
    assert!(
        q.client.lease(&agent("a3")).await.unwrap().is_none(),
        "one member still open"
    );
    q.client
        .complete(&b, &completion(&b, FIXED, 1))
        .await
        .unwrap();
    let last = q
        .client
        .lease(&agent("a3"))
        .await
        .unwrap()
        .expect("released after group");
    assert_eq!(last.task.rule, "audit_rules_immutable");
}

#[tokio::test]
async fn enqueue_is_idempotent_and_priority_orders_the_queue() {
    let q = TestQueue::new(LeaseSettings::default()).await;
    let mut t = tasks(1, 1, 3, 5);
    t[2].priority = 1;
    assert_eq!(q.client.enqueue(&t).await.unwrap(), 3);
    assert_eq!(
        q.client.enqueue(&t).await.unwrap(),
        0,
        "known tasks are skipped"
    );
    q.client.set_generation(1).await.unwrap();
    let order: Vec<i64> = {
        let mut v = Vec::new();
        while let Some(l) = q.client.lease(&agent("a1")).await.unwrap() {
            v.push(l.id().0);
        }
        v
    };
    assert_eq!(order, vec![3, 1, 2]);
}

#[tokio::test]
async fn slow_but_live_agent_keeps_its_lease() {
    // TTL 800 ms renewed every 100 ms: losing it would take 8 renewals in a
    // row going missing, which scheduling noise on a loaded machine cannot do.
    let settings = fast_settings(800, 5);
    let q = ready_queue(settings, 1).await;
    let lease = q.client.lease(&agent("slow")).await.unwrap().unwrap();
    // Work lasts 4 TTLs; a heartbeat renews in its own task meanwhile.
    let hb_client = q.client.clone();
    let hb_lease = lease.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match hb_client.renew(&hb_lease).await.unwrap() {
                Renewal::Renewed { .. } => {}
                Renewal::Refused(r) => return Some(r),
            }
        }
    });
    let thief = q.peer(settings).await;
    for _ in 0..32 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            thief.lease(&agent("thief")).await.unwrap().is_none(),
            "live lease was taken"
        );
        assert_eq!(thief.reap(10).await.unwrap().requeued, 0);
    }
    assert!(
        !heartbeat.is_finished(),
        "renewal refused: {:?}",
        heartbeat.await
    );
    heartbeat.abort();
    let verdict = q
        .client
        .complete(&lease, &completion(&lease, FIXED, 1))
        .await
        .unwrap();
    assert_eq!(verdict, Completion::Accepted);
}

/// Many agents racing on a short TTL, some too slow: every task ends with
/// exactly one accepted completion, whoever raced for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_contention_no_task_is_completed_twice() {
    const TASKS: i64 = 200;
    let settings = fast_settings(150, 1000);
    let q = ready_queue(settings, TASKS).await;
    let accepted: Arc<Mutex<HashMap<TaskId, u32>>> = Default::default();
    let mut agents = Vec::new();
    for i in 0..16 {
        let client = q.peer(settings).await;
        let accepted = accepted.clone();
        agents.push(tokio::spawn(async move {
            let me = agent(&format!("agent-{i}"));
            let mut idle = 0;
            let mut rejected = 0;
            while idle < 20 {
                let Some(lease) = client.lease(&me).await.unwrap() else {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                idle = 0;
                // One in five leases overruns the TTL, like a stalled agent.
                let work = if lease.id().0 % 5 == i % 5 { 200 } else { 1 };
                tokio::time::sleep(Duration::from_millis(work)).await;
                match client
                    .complete(&lease, &completion(&lease, FIXED, 1))
                    .await
                    .unwrap()
                {
                    Completion::Accepted => {
                        *accepted.lock().await.entry(lease.id()).or_default() += 1
                    }
                    Completion::Duplicate => panic!("no retries here"),
                    Completion::Rejected(_) => rejected += 1,
                }
            }
            rejected
        }));
    }
    let mut rejected = 0;
    for a in agents {
        rejected += a.await.unwrap();
    }
    let accepted = accepted.lock().await;
    assert_eq!(accepted.len() as i64, TASKS, "every task completed");
    assert!(
        accepted.values().all(|&n| n == 1),
        "a task was completed twice"
    );
    assert!(
        rejected > 0,
        "the race should have produced stale completions"
    );
    assert_eq!(q.stat("stale_rejected").await, rejected as u64);
    let stream = q.stream().await;
    let applied = stream
        .iter()
        .filter(|(e, r)| r.is_none() && matches!(e.body, EventBody::TaskCompleted { .. }))
        .count();
    assert_eq!(applied as i64, TASKS);
    let reclaims = stream
        .iter()
        .filter(|(e, _)| matches!(e.body, EventBody::LeaseReclaimed { .. }))
        .count();
    assert!(reclaims > 0, "slow agents must have lost leases");
    assert_eq!(
        reclaims as u64,
        q.stat("reclaimed").await,
        "every loss is on the stream"
    );
}

#[tokio::test]
async fn finished_task_keys_expire() {
    let q = ready_queue(LeaseSettings::default(), 1).await;
    let lease = q.client.lease(&agent("a1")).await.unwrap().unwrap();
    q.client
        .complete(&lease, &completion(&lease, FIXED, 1))
        .await
        .unwrap();
    let ttl: i64 = q.conn().ttl(q.keys.task(lease.id())).await.unwrap();
    assert!(
        ttl > 0 && ttl <= LeaseSettings::default().finished_ttl_s as i64,
        "ttl {ttl}"
    );
}
