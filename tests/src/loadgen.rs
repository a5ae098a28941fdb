//! The load generator of `fleet-bench scale`: simulated agents as tokio
//! tasks on the real lease protocol and event stream, with no Docker and no
//! LLM, so that what is measured is the coordinator, Redis and Postgres.
//!
//! Each simulated agent does what `fleet-agent`'s lease loop does, through
//! the same code: `LeaseClient::lease`, a real [`Heartbeat`] renewing at the
//! default interval, a real [`EventSink`] (one ordered sender per agent)
//! carrying a realistic mix of events (lease acquired; per attempt: started,
//! prompt with three ranked lessons, script, evaluation, and on failure a
//! candidate lesson or a failed reflection), then the fenced completion.
//! Only the work in between is a sleep.
//!
//! The runs and work items the tasks belong to are written straight into
//! Postgres ([`bench_run`]): the planner's catalog and pack checks are not
//! what is measured, and a run of 100,000 rules is not a pack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_agent::events::EventSink;
use fleet_agent::heartbeat::Heartbeat;
use fleet_agent::metrics::AgentMetrics;
use fleet_common::event::{EvalStatus, EventBody, LessonRef};
use fleet_common::lease::{LeaseClient, QueuedTask};
use fleet_common::lesson::{CandidateKind, CandidateLesson, LessonScope, ReflectionFailure};
use fleet_common::{AgentId, Budgets, Epoch, EscalationReason, Outcome, RuleTask};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::queue::queued;

/// A run of `n` work items written into Postgres (rules `rule_<i>`, twenty
/// families), answered as the tasks to enqueue.
pub async fn bench_run(pool: &PgPool, n: i64) -> anyhow::Result<Vec<QueuedTask>> {
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO runs (skill_pack, profile, budgets, priority, total)
         VALUES ('bench', 'bench', $1, 100, $2) RETURNING id",
    )
    .bind(sqlx::types::Json(Budgets::default()))
    .bind(n as i32)
    .fetch_one(pool)
    .await?;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO work_items (run_id, rule_id, family, ordinal)
         SELECT $1, 'rule_' || g, 'family_' || (g % 20), g FROM generate_series(1, $2) g
         RETURNING id, rule_id",
    )
    .bind(run)
    .bind(n as i32)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, rule)| queued(run, id, &rule, 5))
        .collect())
}

/// What the simulated agents did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Completions accepted by the lease script.
    pub accepted: AtomicU64,
    /// Completions refused (stale) or leases lost before completing.
    pub lost: AtomicU64,
    /// Events handed to the sinks (completions included).
    pub events: AtomicU64,
}

/// Simulated agents; `work` is the simulated time of one task, spread over
/// its attempts.
pub struct LoadGen {
    pub work: Duration,
    pub tally: Arc<Tally>,
    metrics: AgentMetrics,
}

impl LoadGen {
    pub fn new(work: Duration) -> Self {
        Self {
            work,
            tally: Arc::default(),
            metrics: AgentMetrics::new(),
        }
    }

    /// Starts `n` agents (agent `i` on `clients[i % len]`) that lease until
    /// `stop`, then finish the task in hand and close their sinks.
    pub fn start(
        &self,
        name: &str,
        n: usize,
        clients: &[LeaseClient],
        stop: &CancellationToken,
    ) -> JoinSet<anyhow::Result<()>> {
        let mut set = JoinSet::new();
        for i in 0..n {
            let agent = SimAgent {
                client: clients[i % clients.len()].clone(),
                id: AgentId::parse(&format!("{name}-{i}"))
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .expect("valid agent id"),
                work: self.work,
                tally: self.tally.clone(),
                metrics: self.metrics.clone(),
                stop: stop.clone(),
                salt: i as u64,
            };
            set.spawn(agent.run());
        }
        set
    }
}

struct SimAgent {
    client: LeaseClient,
    id: AgentId,
    work: Duration,
    tally: Arc<Tally>,
    metrics: AgentMetrics,
    stop: CancellationToken,
    salt: u64,
}

impl SimAgent {
    async fn run(self) -> anyhow::Result<()> {
        let incarnation = self.client.next_incarnation(&self.id).await?;
        let sink = EventSink::start(
            self.client.clone(),
            self.id.clone(),
            incarnation,
            self.metrics.clone(),
        );
        let settings = *self.client.settings();
        let mut n = self.salt;
        while !self.stop.is_cancelled() {
            let sent = tokio::time::Instant::now();
            let Some(lease) = self.client.lease(&self.id).await? else {
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    _ = tokio::time::sleep(settings.idle_poll()) => continue,
                }
            };
            n = n.wrapping_add(1);
            let heartbeat = Heartbeat::start(self.client.clone(), lease.clone(), settings, sent);
            let events = sink.for_lease(&lease);
            let emit = |attempt, body| {
                self.tally.events.fetch_add(1, Ordering::Relaxed);
                events.emit(attempt, body);
            };
            let mix = event_mix(n, &lease.task, lease.epoch, lease.deadline_ms, self.work);
            emit(0, mix.acquired);
            let tries = mix.attempts.len() as u32;
            let mut lost = false;
            for (attempt, events) in (1..).zip(mix.attempts) {
                for body in events.before_work {
                    emit(attempt, body);
                }
                tokio::time::sleep(self.work / tries).await;
                if heartbeat.must_stop().is_some() {
                    lost = true;
                    break;
                }
                for body in events.after_work {
                    emit(attempt, body);
                }
            }
            if lost {
                let reason = heartbeat.must_stop();
                heartbeat.stop().await;
                if let Some(reason) = reason {
                    emit(0, EventBody::LeaseAbandoned { reason });
                }
                self.tally.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.tally.events.fetch_add(1, Ordering::Relaxed);
            let done = events.complete(mix.completed).await;
            heartbeat.stop().await;
            match done {
                Ok(c) if c.is_accepted() => self.tally.accepted.fetch_add(1, Ordering::Relaxed),
                _ => self.tally.lost.fetch_add(1, Ordering::Relaxed),
            };
        }
        sink.close(Duration::from_secs(10)).await;
        Ok(())
    }
}

/// The events of one task in the mix, in the order an agent sends them.
pub struct TaskEvents {
    pub acquired: EventBody,
    /// Per attempt (1-based, in order).
    pub attempts: Vec<AttemptEvents>,
    pub completed: EventBody,
}

/// One attempt: what comes before the (simulated) work on the target and
/// what comes after it.
pub struct AttemptEvents {
    /// Started, prompt with three ranked lessons, script.
    pub before_work: Vec<EventBody>,
    /// Evaluation, and on failure a candidate lesson (odd attempts) or a
    /// failed reflection (even ones).
    pub after_work: Vec<EventBody>,
}

/// The realistic event mix of simulated agents and of `fleet-bench ingest`:
/// `n` picks the case (60 % fixed on the first attempt, 25 % on the second,
/// 15 % escalated after three), about eight events per task.
pub fn event_mix(
    n: u64,
    task: &RuleTask,
    epoch: Epoch,
    deadline_ms: i64,
    work: Duration,
) -> TaskEvents {
    let (tries, outcome) = match n % 20 {
        0..=11 => (1, Outcome::Fixed { attempt: 1 }),
        12..=16 => (2, Outcome::Fixed { attempt: 2 }),
        _ => (
            3,
            Outcome::Escalated {
                reason: EscalationReason::AttemptBudget,
            },
        ),
    };
    let attempts = (1..=tries)
        .map(|attempt| {
            let before_work = vec![
                EventBody::AttemptStarted,
                EventBody::PromptAssembled {
                    lessons: (1..=3)
                        .map(|rank| LessonRef {
                            id: format!("family_{}-l{rank}", n % 20),
                            rank,
                            score: 1.0 / f64::from(rank),
                        })
                        .collect(),
                    prompt_chars: 6_000,
                },
                EventBody::ScriptProposed {
                    script: SCRIPT.to_owned(),
                    source: Default::default(),
                },
            ];
            let passed = attempt == tries && matches!(outcome, Outcome::Fixed { .. });
            let mut after_work = vec![EventBody::AttemptEvaluated {
                status: if passed {
                    EvalStatus::Pass
                } else {
                    EvalStatus::Fail
                },
                health_ok: true,
                duration_ms: 900,
                health_failed: Vec::new(),
                contained: None,
                script_started_ms: None,
            }];
            if !passed && attempt % 2 == 1 {
                after_work.push(EventBody::LessonProposed {
                    lesson: CandidateLesson {
                        id: format!("{}-r{}-e{}-a{attempt}", task.rule, task.run.0, epoch.0),
                        kind: CandidateKind::Lesson,
                        family: task.family.clone(),
                        scope: LessonScope::Family,
                        text: "Write the rule under /etc/audit/rules.d, then reload.".into(),
                        pattern: None,
                    },
                });
            } else if !passed {
                after_work.push(EventBody::ReflectionFailed {
                    reason: ReflectionFailure::ReflectorUnparseable,
                });
            }
            AttemptEvents {
                before_work,
                after_work,
            }
        })
        .collect();
    TaskEvents {
        acquired: EventBody::LeaseAcquired { deadline_ms },
        attempts,
        completed: EventBody::TaskCompleted {
            outcome,
            attempts: tries,
            duration_ms: work.as_millis() as u64,
        },
    }
}

/// A script of typical size (a few hundred bytes).
const SCRIPT: &str = "#!/bin/bash\nset -euo pipefail\n\
    rules=/etc/audit/rules.d/50-dac.rules\n\
    for call in chmod fchmod fchmodat chown fchown fchownat lchown; do\n\
      for arch in b32 b64; do\n\
        line=\"-a always,exit -F arch=$arch -S $call -F auid>=1000 -F auid!=unset -k perm_mod\"\n\
        grep -qxF -- \"$line\" \"$rules\" 2>/dev/null || echo \"$line\" >> \"$rules\"\n\
      done\n\
    done\n\
    augenrules --load\n";
