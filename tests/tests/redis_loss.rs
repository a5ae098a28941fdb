//! Redis restarted mid-run, empty and with its data, under a real fleet
//! (coordinator + sim agents on their own Redis ACL users) on a Redis of the
//! test's own. Afterwards every task has exactly one accepted outcome, no
//! stale completion counted, and no event lost: the agents append again
//! what Redis lost before the coordinator ingested it (DESIGN E2, L6).
//!
//! To make the loss certain rather than a matter of timing, the
//! coordinator is paused (SIGSTOP) for a moment before the restart, so the
//! stream holds events — accepted completions among them — that it has not
//! ingested yet. Run with `FLEET_EVENT_REPLAY=off` (the agents inherit it)
//! to see the holes the empty restart leaves without the replay.

use std::time::{Duration, Instant};

use fleet_tests::chaos::{check, ChaosReport};
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::private_redis::PrivateRedis;
use nix::sys::signal::Signal;
use redis::AsyncCommands;

const TASKS: usize = 300;

struct Outcome {
    report: ChaosReport,
    /// `fleet_agent_events_replayed_total`, summed over the agents.
    replayed: u64,
}

async fn restart_mid_run(keep_data: bool) -> Outcome {
    let mut redis = PrivateRedis::start(&[]).await;
    let mut fleet = Fleet::start(FleetOpts {
        agents: 3,
        sim_work_ms: 30,
        // Agents on their own Redis ACL users: the coordinator must create
        // them again after the restart or no agent gets back in.
        per_agent_tokens: true,
        redis_url: Some(redis.url()),
        ..FleetOpts::default()
    })
    .await;
    let rules = (0..TASKS).map(|i| format!("loss_rule_{i:05}")).collect();
    let run = fleet.submit(rules).await;

    // Mid-run: some tasks finished, some leases held.
    let started = Instant::now();
    loop {
        let s = fleet.status(run).await;
        let held: u64 = fleet
            .leases
            .connection()
            .zcard(fleet.keys.leases())
            .await
            .unwrap_or(0);
        if s.finished >= 40 && held > 0 {
            break;
        }
        assert!(
            s.status != "completed" && started.elapsed() < Duration::from_secs(120),
            "never caught the run mid-way: {s:?}; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Hold the ingester back so the stream holds what it has not applied.
    let coordinator = fleet.coordinator.as_ref().expect("coordinator");
    coordinator.signal(Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart(keep_data).await;
    fleet
        .coordinator
        .as_ref()
        .expect("coordinator")
        .signal(Signal::SIGCONT);

    let done = fleet.wait_completed(run, Duration::from_secs(240)).await;
    assert_eq!(done.total, TASKS as u64);
    let replayed = replayed_total(&fleet).await;
    fleet.stop_agents().await;
    fleet.wait_ingested(Duration::from_secs(30)).await;

    let report = check(&fleet.db.pool, run.0).await;
    // Completions replayed as `unconfirmed` (stored as rejected): those
    // Redis accepted and lost before the ingester took them.
    let unconfirmed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_events WHERE run_id = $1 AND rejected = 'unconfirmed'",
    )
    .bind(run.0)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    println!(
        "redis restart (keep_data={keep_data}): {} unconfirmed={unconfirmed} replayed={replayed}",
        report.line()
    );
    fleet.shutdown().await;
    Outcome { report, replayed }
}

/// Sums `fleet_agent_events_replayed_total` over the running agents.
async fn replayed_total(fleet: &Fleet) -> u64 {
    let http = reqwest::Client::new();
    let mut sum = 0;
    for addr in &fleet.agent_metrics {
        let Ok(r) = http.get(format!("http://{addr}/metrics")).send().await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix("fleet_agent_events_replayed_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
    }
    sum
}

fn assert_clean(o: &Outcome) {
    let r = &o.report;
    assert_eq!(r.tasks, TASKS as u64, "{}", r.line());
    assert_eq!(r.lost, 0, "{}", r.line());
    assert_eq!(r.duplicated, 0, "{}", r.line());
    assert_eq!(r.stale_accepted, 0, "{}", r.line());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_run_loses_no_event_and_no_task() {
    let o = restart_mid_run(false).await;
    assert_clean(&o);
    if std::env::var("FLEET_EVENT_REPLAY").is_err() {
        assert!(
            o.replayed > 0,
            "nothing was replayed after an empty restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_its_data_mid_run_loses_nothing() {
    let o = restart_mid_run(true).await;
    assert_clean(&o);
}

/// The agent's sender on a Redis of its own: what it delivered before an
/// empty restart is appended again, in seq order, once the rebuilt Redis
/// has a new generation; the accepted completion as `unconfirmed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_replays_what_an_empty_restart_lost() {
    use fleet_agent::events::EventSink;
    use fleet_agent::metrics::AgentMetrics;
    use fleet_common::event::{EventBody, RejectReason};
    use fleet_common::keys::Keyspace;
    use fleet_common::lease::{Completion, LeaseClient};
    use fleet_common::settings::LeaseSettings;
    use fleet_common::Outcome;
    use fleet_tests::queue::{agent, queued};

    let mut redis = PrivateRedis::start(&[]).await;
    let keys = Keyspace::new("replay:");
    let client = LeaseClient::connect(&redis.url(), keys.clone(), LeaseSettings::default())
        .await
        .unwrap();
    client.set_generation(1).await.unwrap();
    client
        .enqueue(&[queued(1, 1, "sshd_set_idle_timeout", 3)])
        .await
        .unwrap();
    let me = agent("agent-1");
    let lease = client.lease(&me).await.unwrap().expect("a task");
    let metrics = AgentMetrics::new();
    let sink = EventSink::start(client.clone(), me.clone(), 1, metrics.clone());
    // The sender has looked at the generation once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = sink.for_lease(&lease);
    events.emit(1, EventBody::AttemptStarted);
    events.emit(
        1,
        EventBody::ScriptProposed {
            script: "echo fix".into(),
            source: Default::default(),
        },
    );
    sink.flush().await.unwrap();
    let done = events
        .complete(EventBody::TaskCompleted {
            outcome: Outcome::Fixed { attempt: 1 },
            attempts: 1,
            duration_ms: 5,
        })
        .await
        .unwrap();
    assert_eq!(done, Completion::Accepted);
    let before = stream(&client, &keys).await;
    assert_eq!(
        before.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    redis.restart(false).await;
    // Nothing comes back until the coordinator has rebuilt Redis…
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(stream(&client, &keys).await.is_empty());
    assert_eq!(metrics.events_replayed.get(), 0);
    // …and installed a new generation.
    let mut tries = 0;
    while let Err(e) = client.set_generation(2).await {
        tries += 1;
        assert!(tries < 5, "set_generation: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let after = loop {
        let s = stream(&client, &keys).await;
        if s.len() >= 3 {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not replayed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        after,
        vec![
            (1, None),
            (2, None),
            (3, Some(RejectReason::Unconfirmed.as_str().to_owned()))
        ]
    );
    assert_eq!(metrics.events_replayed.get(), 3);
    sink.close(Duration::from_secs(2)).await;
}

/// (seq, rejected) of every stream entry, in stream order.
async fn stream(
    client: &fleet_common::lease::LeaseClient,
    keys: &fleet_common::keys::Keyspace,
) -> Vec<(u64, Option<String>)> {
    use fleet_common::event::{Event, FIELD_EVENT, FIELD_REJECTED};
    // A connection a restart broke answers one error, then reconnects.
    let mut tries = 0;
    let reply: redis::streams::StreamRangeReply = loop {
        match client.connection().xrange_all(keys.events()).await {
            Ok(r) => break r,
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::debug!(error = %e, "xrange failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("xrange: {e}"),
        }
    };
    reply
        .ids
        .iter()
        .map(|id| {
            let raw: String = id.get(FIELD_EVENT).unwrap();
            let rejected: Option<String> = id.get(FIELD_REJECTED);
            (Event::decode(raw.as_bytes()).unwrap().seq, rejected)
        })
        .collect()
}

/// An accepted completion and its replay in one ingest batch: the first
/// copy (the accepted one, earlier on the stream) stands, the replay is a
/// redelivery of the same event id.
#[tokio::test]
async fn an_accepted_completion_and_its_replay_in_one_batch_count_once() {
    use fleet_common::event::RejectReason;
    use fleet_common::settings::LeaseSettings;
    use fleet_common::Outcome;
    use fleet_tests::coord::TestCoordinator;
    use fleet_tests::queue::{agent, completion};

    let c = TestCoordinator::new(LeaseSettings::default()).await;
    c.queue.client.set_generation(1).await.unwrap();
    let run = c.submit(&["sshd_set_idle_timeout"]).await.run;
    let lease = c
        .queue
        .client
        .lease(&agent("agent-1"))
        .await
        .unwrap()
        .expect("a task");
    let done = completion(&lease, Outcome::Fixed { attempt: 1 }, 1);
    assert!(c
        .queue
        .client
        .complete(&lease, &done)
        .await
        .unwrap()
        .is_accepted());
    c.queue
        .client
        .append_rejected(&done, RejectReason::Unconfirmed)
        .await
        .unwrap();
    let report = c.ingester().drain().await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(report.duplicates, 1, "{report:?}");
    assert_eq!(report.rejected_completions, 0, "{report:?}");
    let rows: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT rejected FROM run_events WHERE run_id = $1")
            .bind(run.0)
            .fetch_all(&c.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(None,)]);
    let (state, accepted): (String, Option<String>) =
        sqlx::query_as("SELECT state, accepted_event FROM work_items WHERE id = $1")
            .bind(lease.task.task.0)
            .fetch_one(&c.db.pool)
            .await
            .unwrap();
    assert_eq!(state, "done");
    assert_eq!(accepted.as_deref(), Some(done.id.0.as_str()));
}

/// A replayed completion whose accepted copy Redis lost: recorded as
/// rejected, never counted; the task stays to be run again.
#[tokio::test]
async fn a_replayed_completion_alone_is_recorded_and_not_counted() {
    use fleet_common::event::RejectReason;
    use fleet_common::settings::LeaseSettings;
    use fleet_common::Outcome;
    use fleet_tests::coord::TestCoordinator;
    use fleet_tests::queue::{agent, completion};

    let c = TestCoordinator::new(LeaseSettings::default()).await;
    c.queue.client.set_generation(1).await.unwrap();
    let run = c.submit(&["sshd_set_idle_timeout"]).await.run;
    let lease = c
        .queue
        .client
        .lease(&agent("agent-1"))
        .await
        .unwrap()
        .expect("a task");
    let done = completion(&lease, Outcome::Fixed { attempt: 1 }, 1);
    c.queue
        .client
        .append_rejected(&done, RejectReason::Unconfirmed)
        .await
        .unwrap();
    let report = c.ingester().drain().await.unwrap();
    assert_eq!(report.rejected_completions, 1, "{report:?}");
    let rows: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT rejected FROM run_events WHERE run_id = $1")
            .bind(run.0)
            .fetch_all(&c.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(Some("unconfirmed".into()),)]);
    let state: String = sqlx::query_scalar("SELECT state FROM work_items WHERE id = $1")
        .bind(lease.task.task.0)
        .fetch_one(&c.db.pool)
        .await
        .unwrap();
    assert_ne!(state, "done");
}
