//! The event ingester against real Redis and Postgres (DESIGN E2, E3, L7).

use std::time::Duration;

use fleet_common::event::{Event, EventBody, EVENT_VERSION, MAX_EVENT_BYTES};
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Epoch, EventId, Outcome, RunId, TaskId};
use fleet_tests::coord::TestCoordinator;
use redis::AsyncCommands;

const BLOCK: Duration = Duration::from_millis(50);

fn event(run: RunId, task: TaskId, seq: u64, body: EventBody) -> Event {
    Event {
        v: EVENT_VERSION,
        id: EventId::new_v7(),
        run,
        task,
        rule: "sshd_set_idle_timeout".into(),
        agent: AgentId("agent-1".into()),
        incarnation: 1,
        epoch: Epoch(1 << 20 | 1),
        attempt: 1,
        seq,
        ts_ms: chrono::Utc::now().timestamp_millis(),
        body,
    }
}

async fn xadd(c: &TestCoordinator, fields: &[(&str, &[u8])]) {
    let _: String = c
        .queue
        .conn()
        .xadd(c.queue.keys.events(), "*", fields)
        .await
        .unwrap();
}

async fn count(c: &TestCoordinator, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&c.db.pool).await.unwrap()
}

async fn first_task(c: &TestCoordinator, run: RunId) -> TaskId {
    TaskId(
        sqlx::query_scalar("SELECT min(id) FROM work_items WHERE run_id = $1")
            .bind(run.0)
            .fetch_one(&c.db.pool)
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_applied_once() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let run = c.submit(&["sshd_set_idle_timeout"]).await.run;
    let task = first_task(&c, run).await;
    let e = event(run, task, 1, EventBody::AttemptStarted);
    xadd(&c, &[("e", e.to_json().as_bytes())]).await;
    xadd(&c, &[("e", e.to_json().as_bytes())]).await;
    let ing = c.ingester();
    let report = ing.drain().await.unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(report.duplicates, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM run_events").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM attempts").await, 1);
}

#[tokio::test]
async fn bad_entries_are_quarantined_and_ingestion_goes_on() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let run = c.submit(&["sshd_set_idle_timeout"]).await.run;
    let task = first_task(&c, run).await;

    let mut future = serde_json::to_value(event(run, task, 1, EventBody::AttemptStarted)).unwrap();
    future["v"] = 99.into();
    let unknown_task = event(run, TaskId(task.0 + 1000), 2, EventBody::AttemptStarted);
    let oversized = vec![b'{'; MAX_EVENT_BYTES + 10];
    xadd(&c, &[("e", b"{not json".as_slice())]).await;
    xadd(&c, &[("e", future.to_string().as_bytes())]).await;
    xadd(&c, &[("e", oversized.as_slice())]).await;
    xadd(&c, &[("something", b"else".as_slice())]).await;
    xadd(&c, &[("e", unknown_task.to_json().as_bytes())]).await;
    let good = event(run, task, 3, EventBody::AttemptStarted);
    xadd(&c, &[("e", good.to_json().as_bytes())]).await;

    let report = c.ingester().drain().await.unwrap();
    assert_eq!(report.quarantined, 5);
    assert_eq!(report.applied, 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM quarantined_events").await,
        5
    );
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM quarantined_events ORDER BY id")
            .fetch_all(&c.db.pool)
            .await
            .unwrap();
    assert_eq!(
        reasons,
        [
            "malformed",
            "unknown_version",
            "oversized",
            "malformed",
            "unknown_task"
        ]
    );
    assert_eq!(c.metrics.quarantined_total(), 5);
    let kept: Vec<u8> =
        sqlx::query_scalar("SELECT raw FROM quarantined_events WHERE reason = 'unknown_version'")
            .fetch_one(&c.db.pool)
            .await
            .unwrap();
    assert_eq!(
        kept,
        future.to_string().into_bytes(),
        "quarantine keeps the entry verbatim"
    );
    let applied: String = sqlx::query_scalar("SELECT event_id FROM run_events")
        .fetch_one(&c.db.pool)
        .await
        .unwrap();
    assert_eq!(applied, good.id.0);
}

#[tokio::test]
async fn nothing_is_acknowledged_before_postgres_commits() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let run = c.submit(&["sshd_set_idle_timeout"]).await.run;
    let task = first_task(&c, run).await;
    let e = event(run, task, 1, EventBody::AttemptStarted);
    xadd(&c, &[("e", e.to_json().as_bytes())]).await;

    // Postgres refuses the write: the batch fails and stays pending.
    sqlx::query("ALTER TABLE run_events RENAME TO run_events_away")
        .execute(&c.db.pool)
        .await
        .unwrap();
    let ing = c.ingester();
    assert!(ing.run_once(BLOCK).await.is_err());
    sqlx::query("ALTER TABLE run_events_away RENAME TO run_events")
        .execute(&c.db.pool)
        .await
        .unwrap();

    // A new ingester (a restarted coordinator with the same consumer name)
    // picks the unacknowledged entry up again.
    let report = c.ingester().drain().await.unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM run_events").await, 1);
}

#[tokio::test]
async fn accepted_outcome_finishes_the_item_and_run_while_rejected_one_is_only_recorded() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let run = c.submit(&["sshd_set_idle_timeout"]).await.run;
    let task = first_task(&c, run).await;
    let done = |seq| {
        event(
            run,
            task,
            seq,
            EventBody::TaskCompleted {
                outcome: Outcome::Fixed { attempt: 2 },
                attempts: 2,
                duration_ms: 40,
            },
        )
    };
    let stale = done(1);
    xadd(
        &c,
        &[
            ("e", stale.to_json().as_bytes()),
            ("rejected", b"stale_epoch".as_slice()),
        ],
    )
    .await;
    c.ingester().drain().await.unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM work_items WHERE state = 'pending'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM run_events WHERE rejected = 'stale_epoch'"
        )
        .await,
        1
    );

    let accepted = done(2);
    xadd(&c, &[("e", accepted.to_json().as_bytes())]).await;
    c.ingester().drain().await.unwrap();
    let (outcome, fixed_attempt): (String, i32) =
        sqlx::query_as("SELECT outcome, fixed_attempt FROM work_items WHERE id = $1")
            .bind(task.0)
            .fetch_one(&c.db.pool)
            .await
            .unwrap();
    assert_eq!((outcome.as_str(), fixed_attempt), ("fixed", 2));
    let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
        .bind(run.0)
        .fetch_one(&c.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "completed");
}

#[tokio::test]
async fn ingested_entries_are_trimmed_from_the_stream() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let run = c.submit(&["sshd_set_idle_timeout"]).await.run;
    let task = first_task(&c, run).await;
    for seq in 1..=50 {
        let e = event(run, task, seq, EventBody::AttemptStarted);
        xadd(&c, &[("e", e.to_json().as_bytes())]).await;
    }
    c.ingester().drain().await.unwrap();
    let len: usize = c.queue.conn().xlen(c.queue.keys.events()).await.unwrap();
    assert!(len <= 1, "stream still holds {len} ingested entries");
}
