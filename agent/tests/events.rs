//! The event sink against a real Redis: envelope, gap-free seqs, flush,
//! and no loss or reordering across a Redis outage (DESIGN E1, E2).

mod support;

use std::time::Duration;

use fleet_agent::events::EventSink;
use fleet_agent::metrics::AgentMetrics;
use fleet_common::event::{EventBody, EVENT_VERSION};
use fleet_common::lease::Completion;
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Budgets, Outcome};
use support::proxy::{upstream_of, Mode, Proxy};
use support::{
    assert_gapless, client_at, enqueue, fresh_client, lease_one, rule_task, sample_lease, stream,
    task_field,
};

#[tokio::test]
async fn events_carry_the_envelope_and_flush_means_stored() {
    let client = fresh_client(LeaseSettings::default()).await;
    let agent = AgentId::parse("agent-ev").unwrap();
    let incarnation = client.next_incarnation(&agent).await.unwrap();
    let sink = EventSink::start(
        client.clone(),
        agent.clone(),
        incarnation,
        AgentMetrics::new(),
    );
    let lease = sample_lease(rule_task(5, "rule_x", Budgets::default()));
    let events = sink.for_lease(&lease);
    for attempt in 1..=10 {
        events.emit(attempt, EventBody::AttemptStarted);
    }
    sink.flush().await.unwrap();

    let stored = stream(&client).await;
    assert_eq!(
        stored.len(),
        10,
        "flush returns only once Redis holds every event"
    );
    for (i, d) in stored.iter().enumerate() {
        let e = &d.event;
        assert_eq!(
            (e.v, e.seq, e.attempt),
            (EVENT_VERSION, i as u64 + 1, i as u32 + 1)
        );
        assert_eq!(
            (e.run, e.task, e.epoch),
            (lease.task.run, lease.task.task, lease.epoch)
        );
        assert_eq!(
            (&e.agent, e.incarnation, e.rule.as_str()),
            (&agent, incarnation, "rule_x")
        );
        assert!(e.ts_ms > 0 && !e.id.0.is_empty());
    }
    sink.close(Duration::from_secs(1)).await;
    support::cleanup(&client).await;
}

#[tokio::test]
async fn an_outage_loses_and_reorders_nothing() {
    let direct = fresh_client(LeaseSettings::default()).await;
    let proxy = Proxy::start(upstream_of(&support::redis_url())).await;
    let via_proxy = client_at(
        &proxy.url(),
        direct.keys().prefix(),
        LeaseSettings::default(),
    )
    .await;
    let metrics = AgentMetrics::new();
    let sink = EventSink::start(
        via_proxy,
        AgentId::parse("agent-ev").unwrap(),
        1,
        metrics.clone(),
    );
    let events = sink.for_lease(&sample_lease(rule_task(5, "rule_x", Budgets::default())));

    for attempt in 1..=20 {
        events.emit(attempt, EventBody::AttemptStarted);
    }
    proxy.set(Mode::Cut);
    for attempt in 21..=60 {
        events.emit(attempt, EventBody::AttemptStarted);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set(Mode::Pass);
    for attempt in 61..=80 {
        events.emit(attempt, EventBody::AttemptStarted);
    }
    tokio::time::timeout(Duration::from_secs(15), sink.flush())
        .await
        .expect("events drain once Redis is back")
        .unwrap();

    let stored = stream(&direct).await;
    assert_gapless(&stored);
    let mut attempts: Vec<u32> = stored.iter().map(|d| d.event.attempt).collect();
    attempts.dedup();
    assert_eq!(
        attempts,
        (1..=80).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(
        metrics.event_send_retries.get() > 0,
        "the outage was noticed and retried"
    );
    sink.close(Duration::from_secs(1)).await;
    support::cleanup(&direct).await;
}

#[tokio::test]
async fn the_completion_takes_the_next_seq_and_is_applied_atomically() {
    let client = fresh_client(LeaseSettings::default()).await;
    enqueue(&client, &[rule_task(1, "rule_y", Budgets::default())]).await;
    let lease = lease_one(&client, "agent-ev").await;
    let sink = EventSink::start(client.clone(), lease.agent.clone(), 1, AgentMetrics::new());
    let events = sink.for_lease(&lease);
    events.emit(1, EventBody::AttemptStarted);
    sink.flush().await.unwrap();
    let body = EventBody::TaskCompleted {
        outcome: Outcome::Fixed { attempt: 1 },
        attempts: 1,
        duration_ms: 5,
    };
    assert_eq!(
        events.complete(body.clone()).await.unwrap(),
        Completion::Accepted
    );
    assert_eq!(
        task_field(&client, lease.id(), "state").await.as_deref(),
        Some("done")
    );

    // A stale lease (handed back and granted again) is refused, and the
    // refusal is recorded in the stream under its seq.
    enqueue(&client, &[rule_task(2, "rule_z", Budgets::default())]).await;
    let stale = lease_one(&client, "agent-ev").await;
    assert!(client.release(&stale).await.unwrap());
    let fresh = lease_one(&client, "agent-ev").await;
    assert!(fresh.epoch > stale.epoch);
    let refused = sink.for_lease(&stale).complete(body).await.unwrap();
    assert!(matches!(refused, Completion::Rejected(_)), "{refused:?}");
    assert_eq!(
        task_field(&client, fresh.id(), "state").await.as_deref(),
        Some("leased")
    );

    let stored = stream(&client).await;
    assert_gapless(&stored);
    let kinds: Vec<(&str, u64, bool)> = stored
        .iter()
        .map(|d| (d.event.body.kind(), d.event.seq, d.rejected.is_some()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("attempt_started", 1, false),
            ("task_completed", 2, false),
            ("task_completed", 3, true)
        ]
    );
    sink.close(Duration::from_secs(1)).await;
    support::cleanup(&client).await;
}
