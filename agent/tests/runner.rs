//! The whole agent in-process against a real Redis: draining a queue,
//! losing a lease, and shutting down while holding one.

mod support;

use std::time::Duration;

use fleet_agent::daemon::serve;
use fleet_agent::settings::{AgentSettings, BrainKind, Connection};
use fleet_agent::sim::{expected_outcome, SimBehaviour};
use fleet_common::event::{AbandonReason, EventBody};
use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Budgets, TaskId};
use redis::AsyncCommands;
use support::{assert_gapless, enqueue, fresh_client, rule_task, rule_with, stream, task_field};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn settings(
    client: &LeaseClient,
    agent: &str,
    sim_work_ms: u64,
    max_leases: Option<u64>,
) -> AgentSettings {
    AgentSettings {
        agent: AgentId::parse(agent).unwrap(),
        connection: Connection::Direct {
            redis_url: support::redis_url(),
            key_prefix: client.keys().prefix().to_owned(),
            lease: *client.settings(),
        },
        brain: BrainKind::Sim,
        target: Default::default(),
        llm: Default::default(),
        sim_work: Duration::from_millis(sim_work_ms),
        max_leases,
        metrics_listen: None,
        slots: 1,
        work_dir: None,
        knowledge_patience: std::time::Duration::from_secs(30),
    }
}

async fn wait_for_state(client: &LeaseClient, task: TaskId, state: &str) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while task_field(client, task, "state").await.as_deref() != Some(state) {
        assert!(
            Instant::now() < give_up,
            "task {task} never reached {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_agent_drains_the_queue_with_one_completion_per_task() {
    let client = fresh_client(LeaseSettings::default()).await;
    let budgets = Budgets::default();
    let tasks: Vec<_> = (1..=20)
        .map(|i| rule_task(i, &format!("drain_rule_{i}"), budgets))
        .collect();
    enqueue(&client, &tasks).await;

    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        serve(
            settings(&client, "agent-drain", 4, Some(20)),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the agent stops after 20 leases")
    .unwrap();
    assert_eq!(summary.completed, 20);

    let depth = client.queue_depth().await.unwrap();
    assert_eq!((depth.ready, depth.leased), (0, 0));
    let events = stream(&client).await;
    assert_gapless(&events);
    for t in &tasks {
        assert_eq!(
            task_field(&client, t.task, "state").await.as_deref(),
            Some("done"),
            "task {}",
            t.task
        );
        let completions: Vec<_> = events
            .iter()
            .filter(|d| {
                d.event.task == t.task && matches!(d.event.body, EventBody::TaskCompleted { .. })
            })
            .collect();
        assert_eq!(
            completions.len(),
            1,
            "task {} has one task_completed",
            t.task
        );
        assert!(completions[0].rejected.is_none());
        let EventBody::TaskCompleted { outcome, .. } = completions[0].event.body else {
            unreachable!()
        };
        assert_eq!(
            outcome,
            expected_outcome(&t.rule, &budgets),
            "rule {}",
            t.rule
        );
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.get("stale_rejected"), None);
    support::cleanup(&client).await;
}

#[tokio::test]
async fn a_lost_lease_is_abandoned_and_never_completed() {
    let client = fresh_client(LeaseSettings::default()).await;
    let rule = rule_with(SimBehaviour::FixedOnAttempt(3));
    let task = rule_task(1, &rule, Budgets::default());
    enqueue(&client, std::slice::from_ref(&task)).await;
    let agent = tokio::spawn(serve(
        settings(&client, "agent-lost", 300, Some(1)),
        CancellationToken::new(),
    ));

    wait_for_state(&client, task.task, "leased").await;
    let first_epoch = task_field(&client, task.task, "epoch").await.unwrap();
    // Make Redis consider the lease expired: the next renewal is refused.
    let _: () = client
        .connection()
        .hset(client.keys().task(task.task), "deadline", 0)
        .await
        .unwrap();

    let summary = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("agent ends")
        .unwrap()
        .unwrap();
    assert_eq!(summary.completed, 1);
    assert_eq!(
        task_field(&client, task.task, "state").await.as_deref(),
        Some("done")
    );
    assert_eq!(
        task_field(&client, task.task, "losses").await.as_deref(),
        Some("1")
    );

    let events = stream(&client).await;
    assert_gapless(&events);
    // The reclaim itself is recorded by the script, as the coordinator.
    assert!(events.iter().any(|d| {
        d.event.epoch.to_string() == first_epoch
            && matches!(d.event.body, EventBody::LeaseReclaimed { losses: 1, .. })
    }));
    let on_first: Vec<&EventBody> = events
        .iter()
        .filter(|d| {
            d.event.epoch.to_string() == first_epoch && d.event.agent.as_str() != "coordinator"
        })
        .map(|d| &d.event.body)
        .collect();
    assert!(matches!(
        on_first.first(),
        Some(EventBody::LeaseAcquired { .. })
    ));
    assert_eq!(
        on_first.last(),
        Some(&&EventBody::LeaseAbandoned {
            reason: AbandonReason::RenewRefused
        })
    );
    assert!(
        !on_first
            .iter()
            .any(|b| matches!(b, EventBody::TaskCompleted { .. })),
        "never completes a lost lease"
    );
    let completions: Vec<_> = events
        .iter()
        .filter(|d| d.event.body.kind() == "task_completed")
        .collect();
    assert_eq!(completions.len(), 1);
    assert_ne!(
        completions[0].event.epoch.to_string(),
        first_epoch,
        "completed under the new grant"
    );
    support::cleanup(&client).await;
}

#[tokio::test]
async fn shutdown_hands_the_lease_back_promptly() {
    let client = fresh_client(LeaseSettings::default()).await;
    let rule = rule_with(SimBehaviour::NeverFixable);
    let task = rule_task(
        1,
        &rule,
        Budgets {
            max_attempts: 50,
            wall_time_s: 3600,
        },
    );
    enqueue(&client, std::slice::from_ref(&task)).await;
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(serve(
        settings(&client, "agent-stop", 1000, None),
        shutdown.clone(),
    ));

    wait_for_state(&client, task.task, "leased").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(3), agent)
        .await
        .expect("the agent stops promptly")
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "stopped after {:?}",
        asked.elapsed()
    );
    assert_eq!(summary.completed, 0);

    assert_eq!(
        task_field(&client, task.task, "state").await.as_deref(),
        Some("queued")
    );
    let in_ready: Option<f64> = client
        .connection()
        .zscore(client.keys().ready(), task.task.0)
        .await
        .unwrap();
    assert!(in_ready.is_some(), "the task is back in the ready zset");
    assert_eq!(
        task_field(&client, task.task, "losses").await.as_deref(),
        Some("0")
    );
    assert_eq!(client.stats().await.unwrap().get("released"), Some(&1));

    let events = stream(&client).await;
    assert_gapless(&events);
    assert_eq!(
        events.last().map(|d| &d.event.body),
        Some(&EventBody::LeaseReleased)
    );
    assert!(!events
        .iter()
        .any(|d| d.event.body.kind() == "task_completed"));
    support::cleanup(&client).await;
}

/// A knowledge repo that cannot be reached (fetch fails on every lease)
/// costs the agent nothing but a logged, counted error: every lease is
/// still completed with its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_knowledge_repo_never_loses_an_outcome() {
    use fleet_agent::events::EventSink;
    use fleet_agent::knowledge::Knowledge;
    use fleet_agent::metrics::AgentMetrics;
    use fleet_agent::runner::Runner;

    let client = fresh_client(LeaseSettings::default()).await;
    let budgets = Budgets::default();
    let tasks: Vec<_> = (1..=3)
        .map(|i| rule_task(i, &format!("git_down_rule_{i}"), budgets))
        .collect();
    enqueue(&client, &tasks).await;

    let agent = AgentId::parse("agent-gitdown").unwrap();
    let work_dir = std::env::temp_dir().join(format!(
        "fleet-agent-gitdown-{}",
        uuid::Uuid::new_v4().simple()
    ));
    // Port 1 on loopback: nothing listens, every fetch fails.
    let knowledge = Knowledge::open(
        work_dir.clone(),
        "http://127.0.0.1:1/git/knowledge.git".into(),
        fleet_knowledge::AgentCredentials {
            agent_id: agent.as_str().to_owned(),
            token: "pw".into(),
        },
    )
    .await
    .expect("a cache opens without the network")
    // It would keep trying for 30 s per lease; the point here is what
    // happens once it gives up.
    .with_patience(Duration::from_millis(300));
    let metrics = AgentMetrics::new();
    let incarnation = client.next_incarnation(&agent).await.unwrap();
    let sink = EventSink::start(client.clone(), agent.clone(), incarnation, metrics.clone());
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        Runner::new(
            client.clone(),
            sink.clone(),
            metrics.clone(),
            Some(3),
            CancellationToken::new(),
        )
        .with_knowledge(Some(knowledge))
        .run(vec![fleet_agent::sim::workbench(Duration::from_millis(4))]),
    )
    .await
    .expect("the agent stops after 3 leases");
    sink.close(Duration::from_secs(5)).await;
    assert_eq!(summary.completed, 3);
    assert_eq!(
        metrics.knowledge_errors.get(),
        3,
        "one counted error per lease"
    );
    for t in &tasks {
        assert_eq!(
            task_field(&client, t.task, "state").await.as_deref(),
            Some("done"),
            "task {}",
            t.task
        );
    }
    let _ = std::fs::remove_dir_all(work_dir);
    support::cleanup(&client).await;
}

/// DESIGN T3: a fix stays on the target only until its lease completes;
/// the next lease starts from the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_is_back_at_baseline_after_a_fixed_lease() {
    use std::sync::Arc;

    use fleet_agent::events::EventSink;
    use fleet_agent::metrics::AgentMetrics;
    use fleet_agent::runner::Runner;
    use fleet_agent::sim::{SimBrain, SimEvaluator, SimMachine, SimTarget};
    use fleet_agent::workbench::Workbench;

    let client = fresh_client(LeaseSettings::default()).await;
    let rule = rule_with(SimBehaviour::FixedOnAttempt(1));
    enqueue(&client, &[rule_task(1, &rule, Budgets::default())]).await;

    let work = Duration::from_millis(4);
    let machine = SimMachine::default();
    let bench = Workbench {
        brain: Arc::new(SimBrain),
        target: Arc::new(SimTarget {
            machine: machine.clone(),
            work,
        }),
        evaluator: Arc::new(SimEvaluator {
            machine: machine.clone(),
            work,
        }),
    };
    let agent = AgentId::parse("agent-baseline").unwrap();
    let metrics = AgentMetrics::new();
    let incarnation = client.next_incarnation(&agent).await.unwrap();
    let sink = EventSink::start(client.clone(), agent, incarnation, metrics.clone());
    let summary = tokio::time::timeout(
        Duration::from_secs(30),
        Runner::new(
            client.clone(),
            sink.clone(),
            metrics,
            Some(1),
            CancellationToken::new(),
        )
        .run(vec![bench]),
    )
    .await
    .expect("one lease completes");
    sink.close(Duration::from_secs(5)).await;
    assert_eq!(summary.completed, 1);
    assert_eq!(
        completed_outcome(&client, &rule).await,
        Some("fixed".to_string())
    );
    assert_eq!(
        machine.applied(&rule),
        None,
        "the fix was reverted after completion"
    );
    support::cleanup(&client).await;
}

/// The accepted outcome's kind for `rule`, from the completion event.
async fn completed_outcome(client: &LeaseClient, rule: &str) -> Option<String> {
    stream(client)
        .await
        .iter()
        .find_map(|d| match &d.event.body {
            EventBody::TaskCompleted { outcome, .. } if d.event.rule == rule => {
                Some(outcome.kind().to_string())
            }
            _ => None,
        })
}

/// A pack's VM-only health checks (`targets = ["vm"]`) run only on an
/// agent whose targets are VMs, and such an agent leases from the VM-only
/// set (issue 24). The sim target runs only sim scripts, so a check that
/// runs fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_health_checks_that_fit_the_agents_targets_run() {
    use fleet_agent::events::EventSink;
    use fleet_agent::metrics::AgentMetrics;
    use fleet_agent::runner::Runner;
    use fleet_common::lease::QueuedTask;
    use fleet_common::{HealthCheck, TargetClass};

    let client = fresh_client(LeaseSettings::default()).await;
    let budgets = Budgets {
        max_attempts: 1,
        wall_time_s: 60,
    };
    let systemd = HealthCheck {
        name: "systemd_units".into(),
        command: "systemctl is-system-running".into(),
        timeout_s: 5,
        targets: vec![TargetClass::Vm],
    };
    let mut tasks = Vec::new();
    for (id, need) in [(1, TargetClass::Container), (2, TargetClass::Vm)] {
        let rule = (0..)
            .map(|i| format!("fit_{id}_{i}"))
            .find(|r| fleet_agent::sim::behaviour(r) == SimBehaviour::FixedOnAttempt(1))
            .unwrap();
        let mut task = rule_task(id, &rule, budgets);
        task.checks.health = vec![systemd.clone()];
        tasks.push(QueuedTask {
            task,
            priority: 100,
            lease_loss_budget: 5,
            groups: Vec::new(),
            hold: None,
            need,
        });
    }
    client.enqueue(&tasks).await.unwrap();
    client.set_generation(1).await.unwrap();

    let run_one = |class: TargetClass, name: &'static str| {
        let client = client.clone().with_target_class(class);
        async move {
            let agent = AgentId::parse(name).unwrap();
            let metrics = AgentMetrics::new();
            let incarnation = client.next_incarnation(&agent).await.unwrap();
            let sink = EventSink::start(client.clone(), agent, incarnation, metrics.clone());
            let summary = tokio::time::timeout(
                Duration::from_secs(30),
                Runner::new(
                    client,
                    sink.clone(),
                    metrics,
                    Some(1),
                    CancellationToken::new(),
                )
                .run(vec![fleet_agent::sim::workbench(Duration::from_millis(4))]),
            )
            .await
            .expect("one lease completes");
            sink.close(Duration::from_secs(5)).await;
            assert_eq!(summary.completed, 1, "{name}");
        }
    };
    // The container agent takes the only task it may: its check is skipped.
    run_one(TargetClass::Container, "agent-container").await;
    assert_eq!(
        completed_outcome(&client, &tasks[0].task.rule).await,
        Some("fixed".to_string())
    );
    // The VM agent takes the VM task and runs the check, which fails here.
    run_one(TargetClass::Vm, "agent-vm").await;
    let outcome = stream(&client)
        .await
        .iter()
        .find_map(|d| match &d.event.body {
            EventBody::TaskCompleted { outcome, .. } if d.event.rule == tasks[1].task.rule => {
                Some((*outcome, d.event.agent.as_str().to_owned()))
            }
            _ => None,
        });
    assert_eq!(
        outcome,
        Some((
            fleet_common::Outcome::Escalated {
                reason: fleet_common::EscalationReason::Health
            },
            "agent-vm".to_owned()
        ))
    );
    support::cleanup(&client).await;
}
