//! The lease protocol against a real Redis (DESIGN L1–L5, L7).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleet_common::event::{EventBody, RejectReason};
use fleet_common::lease::{Completion, LeaseError, Renewal};
use fleet_common::settings::LeaseSettings;
use fleet_common::{Epoch, EscalationReason, Outcome, TargetClass, TaskId};
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

// ---- Routing by target class (issue 24, DESIGN T7) ----

/// Which ready set holds `task`: `ready`, `ready:vm`, both or neither.
async fn sets_of(q: &TestQueue, task: TaskId) -> (bool, bool) {
    let mut conn = q.conn();
    let common: Option<f64> = conn.zscore(q.keys.ready(), task.0).await.unwrap();
    let vm: Option<f64> = conn.zscore(q.keys.ready_vm(), task.0).await.unwrap();
    (common.is_some(), vm.is_some())
}

/// `n` tasks from id `first` that need a VM, rules `sysctl_<i>`.
fn vm_tasks(first: i64, n: i64, budget: u32) -> Vec<fleet_common::lease::QueuedTask> {
    (first..first + n)
        .map(|id| {
            let mut t = queued(1, id, &format!("sysctl_{id}"), budget);
            t.need = TargetClass::Vm;
            t
        })
        .collect()
}

#[tokio::test]
async fn a_container_agent_never_leases_a_vm_task_and_a_vm_agent_serves_its_own_first() {
    let q = TestQueue::new(LeaseSettings::default()).await;
    let vm_agent = q
        .peer(LeaseSettings::default())
        .await
        .with_target_class(TargetClass::Vm);
    assert_eq!(q.client.target_class(), TargetClass::Container);
    // Container tasks 1, 2 rank before VM tasks 3, 4 by priority.
    let mut all = tasks(1, 1, 2, 5);
    let mut vms = vm_tasks(3, 2, 5);
    for t in &mut vms {
        t.priority = 200;
    }
    all.extend(vms);
    assert_eq!(q.client.enqueue(&all).await.unwrap(), 4);
    q.client.set_generation(1).await.unwrap();
    let depth = q.client.queue_depth().await.unwrap();
    assert_eq!((depth.ready, depth.ready_vm), (4, 2));
    for id in [3, 4] {
        assert_eq!(sets_of(&q, TaskId(id)).await, (false, true), "task {id}");
        assert_eq!(
            q.task_field(TaskId(id), "need").await.as_deref(),
            Some("vm")
        );
    }

    // A VM agent takes the tasks only it can serve first, whatever their
    // priority, then the common ones.
    let first = vm_agent.lease(&agent("vm-1")).await.unwrap().unwrap();
    assert_eq!(first.task.rule, "sysctl_3");
    let container = q.client.lease(&agent("c-1")).await.unwrap().unwrap();
    assert_eq!(container.task.rule, "rule_1");
    let second = q.client.lease(&agent("c-1")).await.unwrap().unwrap();
    assert_eq!(second.task.rule, "rule_2");
    // Only a VM task is left: a container agent gets nothing, ever.
    for _ in 0..3 {
        assert!(q.client.lease(&agent("c-2")).await.unwrap().is_none());
    }
    assert_eq!(sets_of(&q, TaskId(4)).await, (false, true));
    let last = vm_agent.lease(&agent("vm-1")).await.unwrap().unwrap();
    assert_eq!(last.task.rule, "sysctl_4");
    assert!(vm_agent.lease(&agent("vm-1")).await.unwrap().is_none());
    let depth = q.client.queue_depth().await.unwrap();
    assert_eq!((depth.ready, depth.ready_vm, depth.leased), (0, 0, 4));

    // A VM agent with an empty VM set serves the common one.
    q.client.enqueue(&tasks(1, 5, 1, 5)).await.unwrap();
    let common = vm_agent.lease(&agent("vm-1")).await.unwrap().unwrap();
    assert_eq!(common.task.rule, "rule_5");
    // Completions are fenced as ever.
    assert_eq!(
        vm_agent
            .complete(&last, &completion(&last, FIXED, 1))
            .await
            .unwrap(),
        Completion::Accepted
    );
}

#[tokio::test]
async fn a_released_or_reclaimed_vm_task_goes_back_to_the_vm_set() {
    let settings = fast_settings(200, 5);
    let q = TestQueue::new(settings).await;
    let vm_agent = q.peer(settings).await.with_target_class(TargetClass::Vm);
    q.client.enqueue(&vm_tasks(1, 1, 5)).await.unwrap();
    q.client.set_generation(1).await.unwrap();
    let id = TaskId(1);

    // Released (shutdown, LLM hold): back where only VM agents look.
    let lease = vm_agent.lease(&agent("vm-1")).await.unwrap().unwrap();
    assert_eq!(sets_of(&q, id).await, (false, false));
    assert!(vm_agent.release(&lease).await.unwrap());
    assert_eq!(sets_of(&q, id).await, (false, true));
    assert!(q.client.lease(&agent("c-1")).await.unwrap().is_none());

    // Expired and reclaimed by a container agent's own lease call (the
    // common set is empty, so it reaps on its way): requeued to the VM
    // set, still out of its reach.
    let lease = vm_agent.lease(&agent("vm-1")).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(q.client.lease(&agent("c-1")).await.unwrap().is_none());
    assert_eq!(q.stat("reclaimed").await, 1);
    assert_eq!(sets_of(&q, id).await, (false, true));

    // Expired and reclaimed by the coordinator's reaper: the same.
    let again = vm_agent.lease(&agent("vm-2")).await.unwrap().unwrap();
    assert!(again.epoch > lease.epoch);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let r = q.client.reap(100).await.unwrap();
    assert_eq!((r.requeued, r.dead_lettered), (1, 0));
    assert_eq!(sets_of(&q, id).await, (false, true));
    assert!(q.client.lease(&agent("c-1")).await.unwrap().is_none());

    // And a VM agent's idle lease call reclaims into its own set too.
    let third = vm_agent.lease(&agent("vm-3")).await.unwrap().unwrap();
    assert!(third.epoch > again.epoch);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let fourth = vm_agent.lease(&agent("vm-4")).await.unwrap().unwrap();
    assert_eq!(fourth.id(), id);
    assert!(fourth.epoch > third.epoch);
    assert_eq!(q.stat("reclaimed").await, 3);
}

#[tokio::test]
async fn a_held_vm_task_is_released_into_the_vm_set() {
    let q = TestQueue::new(LeaseSettings::default()).await;
    let vm_agent = q
        .peer(LeaseSettings::default())
        .await
        .with_target_class(TargetClass::Vm);
    let mut member = queued(1, 1, "package_cron_installed", 5);
    member.groups = vec!["package_*_installed".into()];
    let mut held = vm_tasks(2, 1, 5).remove(0);
    held.task.rule = "service_cron_enabled".into();
    held.hold = Some(("package_*_installed".into(), 0));
    q.client.enqueue(&[member, held]).await.unwrap();
    q.client.set_generation(1).await.unwrap();
    assert_eq!(sets_of(&q, TaskId(2)).await, (false, false), "held");

    let m = q.client.lease(&agent("c-1")).await.unwrap().unwrap();
    assert!(vm_agent.lease(&agent("vm-1")).await.unwrap().is_none());
    q.client
        .complete(&m, &completion(&m, FIXED, 1))
        .await
        .unwrap();
    assert_eq!(sets_of(&q, TaskId(2)).await, (false, true));
    assert!(q.client.lease(&agent("c-1")).await.unwrap().is_none());
    let l = vm_agent.lease(&agent("vm-1")).await.unwrap().unwrap();
    assert_eq!(l.task.rule, "service_cron_enabled");
}

#[tokio::test]
async fn presence_says_which_live_agents_have_vm_targets() {
    let q = TestQueue::new(LeaseSettings::default()).await;
    let vm_agent = q
        .peer(LeaseSettings::default())
        .await
        .with_target_class(TargetClass::Vm);
    let window = LeaseSettings::default().alive_window_ms();
    q.client.touch_agent(&agent("c-1")).await.unwrap();
    assert!(q.client.live_vm_agents(window).await.unwrap().is_empty());
    vm_agent.touch_agent(&agent("vm-1")).await.unwrap();
    let vms: Vec<String> = q
        .client
        .live_vm_agents(window)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(vms, ["vm-1"]);
    let mut all: Vec<String> = q
        .client
        .live_agents(window)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    all.sort();
    assert_eq!(all, ["c-1", "vm-1"], "a VM agent is an agent too");
    // Restarted on containers, it no longer counts as one with VMs.
    q.client.touch_agent(&agent("vm-1")).await.unwrap();
    assert!(q.client.live_vm_agents(window).await.unwrap().is_empty());
}

/// Issue 23: completing and leasing the next task in one script call keeps
/// what the two separate calls promise: the completion is judged as
/// `complete` judges it (L3), the grant is made as `lease` makes it (L1,
/// the `gen` gate, the agent's class), and a duplicate is recognised.
#[tokio::test]
async fn complete_and_lease_completes_then_grants_the_next_task() {
    let q = ready_queue(LeaseSettings::default(), 2).await;
    let me = agent("a1");
    let first = q.client.lease(&me).await.unwrap().expect("a task");
    let done = completion(&first, FIXED, 1);
    let (verdict, next) = q.client.complete_and_lease(&first, &done).await.unwrap();
    assert_eq!(verdict, Completion::Accepted);
    let next = next.expect("the second task");
    assert_ne!(next.id(), first.id());
    assert!(next.epoch.generation() == 1 && next.agent == me);
    assert_eq!(
        q.task_field(first.id(), "state").await.as_deref(),
        Some("done")
    );
    assert_eq!(
        q.task_field(next.id(), "state").await.as_deref(),
        Some("leased")
    );
    assert_eq!(q.stream().await, vec![(done.clone(), None)]);
    // A retried call (reply lost): recognised, nothing appended, and the
    // queue being empty now, no grant.
    let (again, none) = q.client.complete_and_lease(&first, &done).await.unwrap();
    assert_eq!((again, none), (Completion::Duplicate, None));
    assert_eq!(q.stream().await.len(), 1);
    assert!(matches!(
        q.client.renew(&next).await.unwrap(),
        Renewal::Renewed { .. }
    ));
    let last = completion(&next, FIXED, 2);
    let (verdict, none) = q.client.complete_and_lease(&next, &last).await.unwrap();
    assert_eq!((verdict, none), (Completion::Accepted, None));
}

#[tokio::test]
async fn complete_and_lease_rejects_a_stale_completion_and_still_grants() {
    let q = ready_queue(fast_settings(200, 5), 2).await;
    let zombie = q.client.lease(&agent("zombie")).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Expired by Redis time: rejected and reclaimed in the same call, and
    // the caller is granted a task (the reclaimed one may come back to it
    // under a new epoch).
    let stale = completion(&zombie, FIXED, 1);
    let (verdict, next) = q.client.complete_and_lease(&zombie, &stale).await.unwrap();
    assert_eq!(verdict, Completion::Rejected(RejectReason::Expired));
    let next = next.expect("a grant");
    assert!(next.epoch > zombie.epoch || next.id() != zombie.id());
    assert_eq!(q.stat("stale_rejected").await, 1);
    let stream = q.stream().await;
    assert_eq!(stream.len(), 2);
    assert_reclaimed(&stream[0].0, &zombie, 1);
    assert_eq!(stream[1], (stale, Some("expired".into())));
}

#[tokio::test]
async fn complete_and_lease_grants_nothing_before_reconciliation() {
    let q = ready_queue(LeaseSettings::default(), 2).await;
    let first = q.client.lease(&agent("a1")).await.unwrap().unwrap();
    // Redis loses its data (L6) and the tasks are enqueued again: the
    // completion finds its task queued, not leased, and no epoch is
    // granted until a generation is installed again (L1).
    q.wipe().await;
    q.client.enqueue(&tasks(1, 1, 2, 5)).await.unwrap();
    let (verdict, next) = q
        .client
        .complete_and_lease(&first, &completion(&first, FIXED, 1))
        .await
        .unwrap();
    assert_eq!(verdict, Completion::Rejected(RejectReason::NotLeased));
    assert!(
        next.is_none(),
        "granted before the generation was installed"
    );
    assert!(matches!(
        q.client.lease(&agent("a1")).await,
        Err(LeaseError::NotReady)
    ));
}

#[tokio::test]
async fn complete_and_lease_serves_a_vm_agent_its_own_set_first() {
    let q = TestQueue::new(LeaseSettings::default()).await;
    let mut vm_task = queued(1, 2, "rule_vm", 5);
    vm_task.need = TargetClass::Vm;
    q.client
        .enqueue(&[
            queued(1, 1, "rule_1", 5),
            vm_task,
            queued(1, 3, "rule_3", 5),
        ])
        .await
        .unwrap();
    q.client.set_generation(1).await.unwrap();
    let container = q.peer(LeaseSettings::default()).await;
    let vm = q
        .peer(LeaseSettings::default())
        .await
        .with_target_class(TargetClass::Vm);
    let c1 = container.lease(&agent("c")).await.unwrap().unwrap();
    assert_eq!(c1.id(), TaskId(1));
    let (_, c2) = container
        .complete_and_lease(&c1, &completion(&c1, FIXED, 1))
        .await
        .unwrap();
    let c2 = c2.expect("the common task");
    assert_eq!(c2.id(), TaskId(3), "a container agent never gets a VM task");
    let (_, none) = container
        .complete_and_lease(&c2, &completion(&c2, FIXED, 2))
        .await
        .unwrap();
    assert!(none.is_none());
    let v = vm.lease(&agent("v")).await.unwrap().unwrap();
    assert_eq!(v.id(), TaskId(2));
}
