//! Skill replay through the ingester and the dream stage's reads (DESIGN
//! H1, D1): each attempt's script source lands in `attempts`, a version-1
//! script reads as the brain's, a replay is no credit trial on either side
//! of any lesson, and the report says where each fix came from.

mod common;

use common::{event, submission, TestEnv};
use fleet_common::api::FixSource;
use fleet_common::event::{EvalStatus, LessonRef, ScriptSource};
use fleet_common::lease::{Completion, Lease};
use fleet_common::{AgentId, Event, EventBody, Outcome, RunId};
use fleet_coordinator::ingest::Ingester;
use fleet_coordinator::{dream, planner, reconcile, status, Metrics};

const BLOB: &str = "3b18e512dba79e4c8300dd08aeb37f8e728b8dad";
const COMMIT: &str = "9fceb02d0ae598e95dc970b74767f19372d61af8";

fn skill() -> ScriptSource {
    ScriptSource::Skill {
        blob: BLOB.into(),
        commit: COMMIT.into(),
    }
}

fn evaluated(status: EvalStatus) -> EventBody {
    EventBody::AttemptEvaluated {
        status,
        health_ok: true,
        duration_ms: 5,
        health_failed: vec![],
        contained: None,
        script_started_ms: Some(chrono::Utc::now().timestamp_millis()),
    }
}

/// Appends `attempts` (each a list of bodies) for `lease` and completes it.
async fn report_lease(
    env: &TestEnv,
    run: RunId,
    lease: &Lease,
    attempts: Vec<Vec<Event>>,
    outcome: Outcome,
    seq: &mut u64,
) {
    let n = attempts.len() as u32;
    for (i, events) in attempts.into_iter().enumerate() {
        for mut e in events {
            *seq += 1;
            e.seq = *seq;
            e.attempt = i as u32 + 1;
            env.leases.append_event(&e).await.unwrap();
        }
    }
    *seq += 1;
    let mut done = event(
        run,
        lease.id(),
        &lease.task.rule,
        lease.epoch,
        *seq,
        EventBody::TaskCompleted {
            outcome,
            attempts: n,
            duration_ms: 10,
        },
    );
    done.attempt = 0;
    assert_eq!(
        env.leases.complete(lease, &done).await.unwrap(),
        Completion::Accepted
    );
}

#[tokio::test]
async fn replays_are_recorded_by_source_left_out_of_credit_and_reported() {
    let env = TestEnv::new().await;
    reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    let run = planner::submit(
        &env.pool,
        &env.leases,
        &env.packs,
        submission(&["sshd_a", "sshd_b"]),
    )
    .await
    .unwrap()
    .run;
    let agent = AgentId("agent-1".into());
    let mut leases = Vec::new();
    for _ in 0..2 {
        leases.push(env.leases.lease(&agent).await.unwrap().expect("a task"));
    }
    leases.sort_by(|a, b| a.task.rule.cmp(&b.task.rule));
    let mut seq = 0;
    let on = |lease: &Lease, body: EventBody| {
        event(run, lease.id(), &lease.task.rule, lease.epoch, 0, body)
    };

    // sshd_a: the skill on main fails its replay; the brain, shown a
    // lesson, fixes it. Its script comes as version 1 (no source).
    let a = &leases[0];
    let mut v1_script = on(
        a,
        EventBody::ScriptProposed {
            script: "echo brain".into(),
            source: ScriptSource::Brain,
        },
    );
    v1_script.v = 1;
    let attempts = vec![
        vec![
            on(a, EventBody::AttemptStarted),
            on(
                a,
                EventBody::ScriptProposed {
                    script: "echo stale skill".into(),
                    source: skill(),
                },
            ),
            on(a, evaluated(EvalStatus::Fail)),
        ],
        vec![
            on(a, EventBody::AttemptStarted),
            on(
                a,
                EventBody::PromptAssembled {
                    lessons: vec![LessonRef {
                        id: "l-1".into(),
                        rank: 1,
                        score: 0.5,
                    }],
                    prompt_chars: 100,
                },
            ),
            v1_script,
            on(a, evaluated(EvalStatus::Pass)),
        ],
    ];
    report_lease(
        &env,
        run,
        a,
        attempts,
        Outcome::Fixed { attempt: 2 },
        &mut seq,
    )
    .await;

    // sshd_b: the replay fixes it.
    let b = &leases[1];
    let attempts = vec![vec![
        on(b, EventBody::AttemptStarted),
        on(
            b,
            EventBody::ScriptProposed {
                script: "echo skill".into(),
                source: skill(),
            },
        ),
        on(b, evaluated(EvalStatus::Pass)),
    ]];
    report_lease(
        &env,
        run,
        b,
        attempts,
        Outcome::Fixed { attempt: 1 },
        &mut seq,
    )
    .await;

    let ingester = Ingester::new(
        env.pool.clone(),
        env.leases.clone(),
        Metrics::new(),
        "coordinator".into(),
    );
    let report = ingester.drain().await.unwrap();
    assert_eq!(report.quarantined, 0);

    type Row = (String, i32, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT w.rule_id, a.attempt, a.script_source, a.skill_blob, a.skill_commit
         FROM attempts a JOIN work_items w ON w.id = a.work_item_id ORDER BY 1, 2",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let skill_row = |rule: &str, attempt| {
        (
            rule.to_owned(),
            attempt,
            Some("skill".to_owned()),
            Some(BLOB.to_owned()),
            Some(COMMIT.to_owned()),
        )
    };
    assert_eq!(
        rows,
        vec![
            skill_row("sshd_a", 1),
            ("sshd_a".into(), 2, Some("brain".into()), None, None),
            skill_row("sshd_b", 1),
        ]
    );

    // D1: the only trial is the brain's attempt; neither replay counts for
    // or against lesson l-1 (or as the family's baseline without it).
    let mut conn = env.pool.acquire().await.unwrap();
    let trials = dream::trials(&mut conn).await.unwrap();
    assert_eq!(trials.len(), 1, "{trials:?}");
    assert_eq!(
        (trials[0].rule.as_str(), trials[0].won, &trials[0].shown),
        ("sshd_a", true, &vec!["l-1".to_owned()])
    );
    drop(conn);

    let report = status::run_report(&env.pool, run).await.unwrap();
    let fixed_by: Vec<(&str, Option<FixSource>)> = report
        .rules
        .iter()
        .map(|r| (r.rule.as_str(), r.fixed_by))
        .collect();
    assert_eq!(
        fixed_by,
        vec![
            ("sshd_a", Some(FixSource::Brain)),
            ("sshd_b", Some(FixSource::Skill))
        ]
    );
    env.cleanup().await;
}
