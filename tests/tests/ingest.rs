//! The event ingester against real Redis and Postgres: acknowledgement only
//! after commit (E2) and trimming (L7). Idempotence and quarantine (E2, E3)
//! are in `coordinator/tests/ingest.rs`.

use std::time::Duration;

use fleet_common::event::{Event, EventBody, EVENT_VERSION};
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Epoch, EventId, RunId, TaskId};
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
