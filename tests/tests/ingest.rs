//! The event ingester against real Redis and Postgres: acknowledgement only
//! after commit (E2), trimming (L7), and batches that mix duplicates,
//! garbage and redeliveries (E2, E3). More idempotence and quarantine cases
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

fn lesson_refs(ids: &[&str]) -> Vec<fleet_common::event::LessonRef> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| fleet_common::event::LessonRef {
            id: (*id).into(),
            rank: i as u32 + 1,
            score: 0.5,
        })
        .collect()
}

fn completed(run: RunId, task: TaskId, seq: u64) -> Event {
    event(
        run,
        task,
        seq,
        EventBody::TaskCompleted {
            outcome: fleet_common::Outcome::Fixed { attempt: 1 },
            attempts: 1,
            duration_ms: 10,
        },
    )
}

/// One attempt's events for `task` plus its outcome.
fn attempt_events(run: RunId, task: TaskId, rule: &str) -> Vec<Event> {
    use fleet_common::event::EvalStatus;
    use fleet_common::lesson::{CandidateKind, CandidateLesson, LessonScope};
    let mut started = event(run, task, 1, EventBody::AttemptStarted);
    // Started before the prompt: stays the attempt's start.
    started.ts_ms -= 1000;
    vec![
        started,
        event(
            run,
            task,
            2,
            EventBody::PromptAssembled {
                lessons: lesson_refs(&["l-one", "l-two"]),
                prompt_chars: 100,
            },
        ),
        event(
            run,
            task,
            3,
            EventBody::ScriptProposed {
                script: "echo fix".into(),
                source: Default::default(),
            },
        ),
        event(
            run,
            task,
            4,
            EventBody::AttemptEvaluated {
                status: EvalStatus::Fail,
                health_ok: true,
                duration_ms: 5,
                health_failed: vec!["sshd".into()],
                contained: None,
                script_started_ms: None,
            },
        ),
        event(
            run,
            task,
            5,
            EventBody::LessonProposed {
                lesson: CandidateLesson {
                    id: format!("{rule}-r{}-e1-a1", run.0),
                    kind: CandidateKind::Lesson,
                    family: "sshd".into(),
                    scope: LessonScope::Family,
                    text: "Set ClientAliveInterval in sshd_config.".into(),
                    pattern: None,
                },
            },
        ),
        completed(run, task, 6),
    ]
}

/// Everything the events of a run left in Postgres, as one comparable row.
async fn footprint(c: &TestCoordinator) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT count(*) FROM run_events",
        "SELECT count(*) FROM quarantined_events",
        "SELECT count(*) FROM attempts",
        "SELECT count(*) FROM lesson_attributions",
        "SELECT count(*) FROM lessons",
        "SELECT count(*) FROM work_items WHERE state = 'done'",
        "SELECT count(*) FROM attempts WHERE script = 'echo fix' AND eval_status = 'fail'
            AND health_failed = '{sshd}' AND reflection = 'lesson' AND health_ok",
    ] {
        out.push(count(c, sql).await);
    }
    out
}

#[tokio::test]
async fn a_batch_with_duplicates_and_garbage_applies_each_event_once() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let rules = ["sshd_set_idle_timeout", "sshd_disable_root_login"];
    let run = c.submit(&rules).await.run;
    let first = first_task(&c, run).await;
    let second = TaskId(first.0 + 1);
    let a = attempt_events(run, first, rules[0]);
    let (outcome_1, outcome_2) = (completed(run, second, 1), completed(run, second, 2));

    // One batch: the attempt's events with a redelivered prompt and script
    // in between, garbage in the middle, and two accepted outcomes for one
    // task (a broken lease protocol: the first one must stand).
    let mut entries: Vec<Vec<u8>> = a.iter().map(|e| e.to_json().into_bytes()).collect();
    entries.insert(3, a[1].to_json().into_bytes());
    entries.insert(4, b"{not json".to_vec());
    entries.insert(5, a[2].to_json().into_bytes());
    entries.push(outcome_1.to_json().into_bytes());
    entries.push(outcome_2.to_json().into_bytes());
    entries.push(a[0].to_json().into_bytes());
    for e in &entries {
        xadd(&c, &[("e", e)]).await;
    }
    let report = c.ingester().drain().await.unwrap();
    assert_eq!(report.applied, 8, "{report:?}");
    assert_eq!(report.duplicates, 3, "{report:?}");
    assert_eq!(report.quarantined, 1, "{report:?}");
    assert_eq!(c.metrics.duplicate_outcomes.get(), 1);
    assert_eq!(c.metrics.quarantined_total(), 1);
    assert_eq!(footprint(&c).await, vec![8, 1, 1, 2, 1, 2, 1]);

    let (accepted, started): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT w.accepted_event, a.started_at FROM work_items w, attempts a
         WHERE w.id = $1 AND a.work_item_id = $2",
    )
    .bind(second.0)
    .bind(first.0)
    .fetch_one(&c.db.pool)
    .await
    .unwrap();
    assert_eq!(accepted, outcome_1.id.0, "the first outcome stands");
    assert_eq!(started.timestamp_millis(), a[0].ts_ms);
}

#[tokio::test]
async fn a_crash_between_commit_and_ack_applies_nothing_twice() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let rule = "sshd_set_idle_timeout";
    let run = c.submit(&[rule]).await.run;
    let task = first_task(&c, run).await;
    let events = attempt_events(run, task, rule);
    for e in &events {
        xadd(&c, &[("e", e.to_json().as_bytes())]).await;
    }
    let first = c.ingester().drain().await.unwrap();
    assert_eq!(first.applied, events.len() as u64);
    let before = footprint(&c).await;
    let outcomes = c.metrics.outcomes_total();

    // The commit happened but the acknowledgement was lost: every entry is
    // delivered again, in one batch and then one by one.
    for e in &events {
        xadd(&c, &[("e", e.to_json().as_bytes())]).await;
    }
    let again = c.ingester().drain().await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, events.len() as u64));
    for e in &events {
        xadd(&c, &[("e", e.to_json().as_bytes())]).await;
        let again = c.ingester().run_once(BLOCK).await.unwrap();
        assert_eq!((again.applied, again.duplicates), (0, 1));
    }
    assert_eq!(footprint(&c).await, before);
    assert_eq!(c.metrics.outcomes_total(), outcomes);
    assert_eq!(c.metrics.duplicate_outcomes.get(), 0);
}

#[tokio::test]
async fn batches_read_ahead_apply_each_event_once_and_check_every_owner() {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let run = c.submit(&["sshd_set_idle_timeout"]).await.run;
    let other = c.submit(&["sshd_disable_root_login"]).await.run;
    let task = first_task(&c, run).await;
    let foreign = first_task(&c, other).await;
    let started = |seq: u64| {
        let mut e = event(run, task, seq, EventBody::AttemptStarted);
        e.attempt = seq as u32;
        e
    };
    let append = |jsons: Vec<String>| {
        let mut pipe = redis::pipe();
        for j in &jsons {
            pipe.cmd("XADD")
                .arg(c.queue.keys.events())
                .arg("*")
                .arg("e")
                .arg(j)
                .ignore();
        }
        let mut conn = c.queue.conn();
        async move { pipe.query_async::<()>(&mut conn).await.unwrap() }
    };

    // Ingested before; delivered again below.
    let early: Vec<Event> = (1..=100).map(started).collect();
    append(early.iter().map(Event::to_json).collect()).await;
    assert_eq!(c.ingester().drain().await.unwrap().applied, 100);

    // Several batches (2,048 entries each), each read while the one before
    // commits: every tenth new event twice in a row (a duplicate inside its
    // batch, or across two), the early ones again, and an event naming a
    // work item of another run (`run_events` has no foreign key: the
    // ingester's check must catch it).
    let fresh: Vec<Event> = (101..=9000).map(started).collect();
    let mut jsons = Vec::new();
    for (i, e) in fresh.iter().enumerate() {
        jsons.push(e.to_json());
        if i % 10 == 0 {
            jsons.push(e.to_json());
        }
    }
    jsons.insert(
        1500,
        event(run, foreign, 9999, EventBody::AttemptStarted).to_json(),
    );
    jsons.extend(early.iter().map(Event::to_json));
    // Text that `COPY` must escape, kept byte for byte.
    let script = "#!/bin/sh\n\tprintf '%s\\n' \"a\\tb\" \u{e9}\r\n";
    let mut tricky = event(
        run,
        task,
        30_000,
        EventBody::ScriptProposed {
            script: script.into(),
            source: Default::default(),
        },
    );
    tricky.attempt = 30_000;
    jsons.push(tricky.to_json());
    append(jsons).await;

    let report = c.ingester().drain().await.unwrap();
    assert_eq!(report.applied, 8901, "{report:?}");
    assert_eq!(report.duplicates, 890 + 100, "{report:?}");
    assert_eq!(report.quarantined, 1, "{report:?}");
    assert_eq!(count(&c, "SELECT count(*) FROM run_events").await, 9001);
    assert_eq!(count(&c, "SELECT count(*) FROM attempts").await, 9001);
    let stored: (String, String) = sqlx::query_as(
        "SELECT e.body->>'script', a.script FROM run_events e, attempts a
         WHERE e.kind = 'script_proposed' AND a.attempt = 30000",
    )
    .fetch_one(&c.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, (script.to_owned(), script.to_owned()));
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM quarantined_events WHERE reason = 'unknown_task'"
        )
        .await,
        1
    );
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(c.queue.keys.events())
        .arg(fleet_common::keys::INGEST_GROUP)
        .query_async(&mut c.queue.conn())
        .await
        .unwrap();
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "entries left pending: {pending:?}"
    );
}

/// A realistic mix from many agents at once: the events of 64 tasks
/// interleaved, each task's in order, so that one attempt's events span
/// two batches as often as they do under load.
fn interleaved_mix(tasks: &[fleet_common::lease::QueuedTask], n: usize) -> Vec<Event> {
    let events = fleet_tests::bench_ingest::realistic_events(tasks, n);
    let mut per_task: std::collections::BTreeMap<i64, std::collections::VecDeque<Event>> =
        Default::default();
    for e in events {
        per_task.entry(e.task.0).or_default().push_back(e);
    }
    let groups: Vec<Vec<std::collections::VecDeque<Event>>> = per_task
        .into_values()
        .collect::<Vec<_>>()
        .chunks(64)
        .map(<[_]>::to_vec)
        .collect();
    let mut out = Vec::with_capacity(n);
    for mut group in groups {
        while group.iter().any(|q| !q.is_empty()) {
            for q in &mut group {
                out.extend(q.pop_front());
            }
        }
    }
    out
}

/// What `events` must leave in Postgres, applied once each, in the order of
/// [`footprint_of_mix`].
fn expected_footprint(events: &[Event]) -> Vec<i64> {
    use std::collections::HashSet;
    let mut attempts = HashSet::new();
    let mut evaluated = HashSet::new();
    let (mut attributions, mut lessons, mut done) = (0, 0, 0);
    for e in events {
        let key = (e.task.0, e.epoch.0, e.attempt);
        match &e.body {
            EventBody::AttemptStarted | EventBody::ScriptProposed { .. } => {
                attempts.insert(key);
            }
            EventBody::PromptAssembled { lessons: refs, .. } => {
                attempts.insert(key);
                attributions += refs.len() as i64;
            }
            EventBody::AttemptEvaluated { .. } => {
                attempts.insert(key);
                evaluated.insert(key);
            }
            EventBody::LessonProposed { .. } => {
                attempts.insert(key);
                lessons += 1;
            }
            EventBody::ReflectionFailed { .. } => {
                attempts.insert(key);
            }
            EventBody::TaskCompleted { .. } => done += 1,
            _ => {}
        }
    }
    vec![
        events.len() as i64,
        attempts.len() as i64,
        evaluated.len() as i64,
        attributions,
        lessons,
        done,
    ]
}

async fn footprint_of_mix(c: &TestCoordinator) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT count(*) FROM run_events",
        "SELECT count(*) FROM attempts",
        "SELECT count(*) FROM attempts WHERE evaluated_at IS NOT NULL AND script IS NOT NULL",
        "SELECT count(*) FROM lesson_attributions",
        "SELECT count(*) FROM lessons",
        "SELECT count(*) FROM work_items WHERE state = 'done'",
    ] {
        out.push(count(c, sql).await);
    }
    out
}

#[tokio::test]
async fn concurrent_ingest_workers_apply_each_event_once_without_lock_conflicts() {
    use fleet_coordinator::ingest::{drain_all, worker_consumers, Ingester};
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    // Fifteen batches of 2,048 from 64 agents at once; every batch that carries
    // a completion locks the one run, and neighbouring batches share
    // attempts: the workers must take their locks in one order.
    let n = 30_000;
    let tasks = fleet_tests::loadgen::bench_run(&c.db.pool, (n / 8 + 1) as i64)
        .await
        .unwrap();
    let events = interleaved_mix(&tasks, n);
    assert_eq!(events.len(), n);
    for chunk in events.chunks(1000) {
        let mut pipe = redis::pipe();
        for e in chunk {
            pipe.cmd("XADD")
                .arg(c.queue.keys.events())
                .arg("*")
                .arg("e")
                .arg(e.to_json())
                .ignore();
        }
        pipe.query_async::<()>(&mut c.queue.conn()).await.unwrap();
    }

    let workers: Vec<Ingester> = worker_consumers("test", 3)
        .into_iter()
        .map(|consumer| {
            Ingester::new(
                c.db.pool.clone(),
                c.queue.client.clone(),
                c.metrics.clone(),
                consumer,
            )
        })
        .collect();
    let report = drain_all(&workers).await.unwrap();
    assert_eq!(
        (report.applied, report.duplicates, report.quarantined),
        (n as u64, 0, 0),
        "{report:?}"
    );
    let expected = expected_footprint(&events);
    assert!(expected[1] > 2_000 && expected[3] > 2_000, "{expected:?}");
    assert_eq!(footprint_of_mix(&c).await, expected);
    assert_eq!(
        c.metrics.ingest_conflicts.get(),
        0,
        "batches of concurrent workers deadlocked and were retried"
    );
    let len: u64 = c.queue.conn().xlen(c.queue.keys.events()).await.unwrap();
    assert!(
        len < 2048,
        "acknowledged entries were not trimmed: {len} left"
    );
}
