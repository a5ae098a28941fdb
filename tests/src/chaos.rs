//! Process-level chaos: agents SIGKILLed mid-lease and restarted, one agent
//! paused past its TTL and resumed; then a checker over Postgres and Redis in
//! the style of a total-queue checker. Used by the chaos test in `make test`
//! and, longer, by `make chaos`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fleet_common::lease::LeaseClient;
use fleet_common::TaskId;
use nix::sys::signal::Signal;
use rand::seq::IndexedRandom;
use rand::Rng;
use redis::AsyncCommands;
use sqlx::PgPool;

use crate::fleet::{Fleet, FleetOpts};

#[derive(Debug, Clone)]
pub struct ChaosPlan {
    pub tasks: usize,
    pub agents: usize,
    pub sim_work_ms: u64,
    /// Time between SIGKILLs of a lease-holding agent.
    pub kill_every: Duration,
    /// Agents to pause past the TTL, one after another.
    pub pauses: usize,
    /// Completions a zombie attempts after overstaying its lease. Paused
    /// agent processes fence themselves when they wake (DESIGN L4), so this
    /// in-process zombie is what makes Redis's own fence (L3) face the run.
    pub zombie_completions: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub tasks: u64,
    pub kills: u64,
    pub pauses: u64,
    /// Tasks without an accepted outcome, plus events missing from an
    /// agent incarnation's sequence.
    pub lost: u64,
    /// Tasks with more than one accepted outcome, plus events applied
    /// twice (one incarnation's seq under two event ids).
    pub duplicated: u64,
    /// Accepted outcomes whose epoch is not the task's last grant.
    pub stale_accepted: u64,
    pub stale_rejected: u64,
    /// Redis's own count of refused completions, to cross-check.
    pub stale_rejected_redis: u64,
    /// Completions the zombie attempted after its lease expired.
    pub zombie_attempts: u64,
    /// Lease losses recorded in Postgres (`lease_reclaimed` events), as the
    /// API reports them, and as Redis counted them.
    pub lease_losses: u64,
    pub lease_losses_api: u64,
    pub lease_losses_redis: u64,
    /// From SIGKILL to the task's next grant, ms.
    pub recovery_ms: Vec<u64>,
    /// Accepted agent outcomes whose lease branch was looked for in the
    /// knowledge repo, and what was missing there (K3).
    pub branches_checked: u64,
    pub branches_missing: Vec<String>,
}

impl ChaosReport {
    pub fn percentile(&self, p: f64) -> u64 {
        percentile(&self.recovery_ms, p)
    }

    pub fn line(&self) -> String {
        format!(
            "chaos: tasks={} kills={} pauses={} lost={} duplicated={} stale_accepted={} stale_rejected={} recovery_p50_ms={} recovery_p99_ms={} branches={} branches_missing={}",
            self.tasks,
            self.kills,
            self.pauses,
            self.lost,
            self.duplicated,
            self.stale_accepted,
            self.stale_rejected,
            self.percentile(0.50),
            self.percentile(0.99),
            self.branches_checked,
            self.branches_missing.len()
        )
    }
}

/// A lease holder killed at `at_ms`.
pub struct Kill {
    pub task: TaskId,
    pub epoch: u64,
    pub at_ms: i64,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A leased task, its epoch and its holder, picked at random from Redis.
pub async fn random_holder(leases: &LeaseClient) -> Option<(TaskId, u64, String)> {
    let mut conn = leases.connection();
    let keys = leases.keys();
    let leased: Vec<i64> = conn.zrange(keys.leases(), 0, -1).await.ok()?;
    let id = *leased.choose(&mut rand::rng())?;
    let (epoch, agent): (Option<u64>, Option<String>) = redis::cmd("HMGET")
        .arg(keys.task(TaskId(id)))
        .arg("epoch")
        .arg("agent")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some((TaskId(id), epoch?, agent?))
}

fn slot_of(agent: &str) -> Option<usize> {
    agent
        .strip_prefix("agent-")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

pub async fn run(plan: ChaosPlan) -> ChaosReport {
    let opts = FleetOpts {
        agents: plan.agents,
        sim_work_ms: plan.sim_work_ms,
        lease_loss_budget: 5,
        target_image: None,
        llm_url: None,
        auto_dream: true,
        auto_bundle_check: false,
        json_logs: false,
        // Agents on their own tokens and Redis users, as in production.
        per_agent_tokens: true,
        redis_url: None,
        skill_packs: None,
        agent_env: Vec::new(),
        vm_image: None,
    };
    let mut fleet = Fleet::start(opts).await;
    let rules = (0..plan.tasks)
        .map(|i| format!("chaos_rule_{i:05}"))
        .collect();
    let run = fleet.submit(rules).await;
    let ttl = fleet.leases.settings().ttl();

    let zombie = tokio::spawn(zombie(fleet.leases.clone(), ttl, plan.zombie_completions));
    let started = Instant::now();
    let mut kills = Vec::new();
    let mut pauses = 0;
    let mut next_pause = plan.kill_every * 3;
    let mut restart_at: Vec<(usize, Instant)> = Vec::new();
    loop {
        if fleet.status(run).await.status == "completed" {
            break;
        }
        assert!(
            started.elapsed() < plan.timeout,
            "chaos run not finished in {:?}; logs in {}",
            plan.timeout,
            fleet.logs.display()
        );
        tokio::time::sleep(plan.kill_every).await;
        // Restart killed agents after a short, random downtime.
        let now = Instant::now();
        let due: Vec<usize> = restart_at
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(i, _)| *i)
            .collect();
        restart_at.retain(|(_, t)| *t > now);
        for i in due {
            fleet.start_agent(i);
        }
        let Some((task, epoch, agent)) = random_holder(&fleet.leases).await else {
            continue;
        };
        let Some(slot) = slot_of(&agent) else {
            continue;
        };
        let Some(proc_) = fleet.agents.get_mut(slot).and_then(Option::take) else {
            continue;
        };
        if pauses < plan.pauses && started.elapsed() >= next_pause {
            // A zombie: paused past its TTL while holding a lease, then
            // woken up to find its work taken over.
            proc_.signal(Signal::SIGSTOP);
            tokio::time::sleep(ttl + Duration::from_secs(1)).await;
            proc_.signal(Signal::SIGCONT);
            fleet.agents[slot] = Some(proc_);
            pauses += 1;
            next_pause = started.elapsed() + plan.kill_every * 5;
            continue;
        }
        let at_ms = now_ms();
        proc_.kill().await;
        kills.push(Kill { task, epoch, at_ms });
        let downtime = Duration::from_millis(rand::rng().random_range(50..400));
        restart_at.push((slot, Instant::now() + downtime));
    }
    for (i, _) in restart_at {
        fleet.start_agent(i);
    }
    let (zombie_attempts, zombie_accepted) = zombie.await.expect("zombie task");
    fleet.stop_agents().await;
    fleet.wait_ingested(Duration::from_secs(30)).await;

    let mut report = check(&fleet.db.pool, run.0).await;
    report.zombie_attempts = zombie_attempts;
    report.stale_accepted += zombie_accepted;
    report.kills = kills.len() as u64;
    report.pauses = pauses as u64;
    report.recovery_ms = recovery(&fleet.db.pool, &kills).await;
    let (checked, missing) = fleet.missing_lease_branches(run).await;
    report.branches_checked = checked as u64;
    report.branches_missing = missing;
    report.stale_rejected_redis = fleet
        .leases
        .stats()
        .await
        .unwrap()
        .get("stale_rejected")
        .copied()
        .unwrap_or(0);
    fleet.shutdown().await;
    report
}

/// Leases real tasks from the running fleet's queue, overstays each lease
/// by more than its TTL (as a paused agent would), then tries to complete
/// it. Returns (attempts, accepted); every attempt must be refused.
pub async fn zombie(
    leases: fleet_common::lease::LeaseClient,
    ttl: Duration,
    attempts: usize,
) -> (u64, u64) {
    use fleet_common::event::{Event, EventBody, EVENT_VERSION};
    use fleet_common::{EventId, Outcome};
    let me = fleet_common::AgentId("zombie-1".into());
    let (mut tried, mut accepted) = (0u64, 0u64);
    let mut idle = 0;
    while (tried as usize) < attempts && idle < 100 {
        let Ok(Some(lease)) = leases.lease(&me).await else {
            idle += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        tried += 1;
        let late = Event {
            v: EVENT_VERSION,
            id: EventId::new_v7(),
            run: lease.task.run,
            task: lease.task.task,
            rule: lease.task.rule.clone(),
            agent: me.clone(),
            incarnation: 1,
            epoch: lease.epoch,
            attempt: 1,
            seq: tried,
            ts_ms: now_ms(),
            body: EventBody::TaskCompleted {
                outcome: Outcome::Fixed { attempt: 1 },
                attempts: 1,
                duration_ms: 1,
            },
        };
        if leases
            .complete(&lease, &late)
            .await
            .expect("complete call")
            .is_accepted()
        {
            accepted += 1;
        }
    }
    (tried, accepted)
}

/// The checker: every task exactly one accepted outcome, no event lost, no
/// stale completion accepted.
pub async fn check(pool: &PgPool, run: i64) -> ChaosReport {
    let count = |sql: &'static str| async move {
        let n: i64 = sqlx::query_scalar(sql)
            .bind(run)
            .fetch_one(pool)
            .await
            .expect(sql);
        n as u64
    };
    let tasks = count("SELECT count(*) FROM work_items WHERE run_id = $1").await;
    // A rule the planner recorded `needs_target` (no live agent had the
    // VM it needs, issue 24) is finished without ever being leased.
    let unfinished = count(
        "SELECT count(*) FROM work_items w WHERE run_id = $1 AND (state <> 'done' OR (
           outcome IS DISTINCT FROM 'needs_target' AND NOT EXISTS (
           SELECT 1 FROM run_events e WHERE e.work_item_id = w.id AND e.kind = 'task_completed' AND e.rejected IS NULL)))",
    )
    .await;
    let duplicated = count(
        "SELECT count(*) FROM (SELECT work_item_id FROM run_events WHERE run_id = $1
           AND kind = 'task_completed' AND rejected IS NULL GROUP BY work_item_id HAVING count(*) > 1) d",
    )
    .await;
    // Per agent incarnation that worked on this run, the ingested sequence
    // numbers must be exactly 1..max: a hole is an event that was sent and
    // never applied. An incarnation's sequence runs on across runs, so it
    // is read whole (a hole then counts in each run the incarnation saw).
    let missing_events = count(
        "SELECT coalesce(sum(mx - n), 0)::bigint FROM (
           SELECT agent_id, incarnation, max(seq) AS mx, count(DISTINCT seq) AS n
           FROM run_events
           WHERE (agent_id, incarnation) IN (
             SELECT agent_id, incarnation FROM run_events WHERE run_id = $1 AND agent_id <> 'coordinator')
           GROUP BY agent_id, incarnation) s",
    )
    .await;
    // One event sent once has one id; the same (incarnation, seq) under two
    // ids is an event applied twice (a replay that minted a new id, or two
    // processes numbered the same incarnation).
    let events_twice = count(
        "SELECT count(*) FROM (SELECT 1 FROM run_events WHERE run_id = $1 AND agent_id <> 'coordinator'
           GROUP BY agent_id, incarnation, seq HAVING count(*) > 1) d",
    )
    .await;
    let stale_accepted = count(
        "SELECT count(*) FROM work_items w WHERE run_id = $1 AND accepted_epoch < (
           SELECT max(epoch) FROM run_events e WHERE e.work_item_id = w.id AND e.kind = 'lease_acquired')",
    )
    .await;
    let stale_rejected =
        count("SELECT count(*) FROM run_events WHERE run_id = $1 AND rejected IS NOT NULL").await;
    let lease_losses =
        count("SELECT count(*) FROM run_events WHERE run_id = $1 AND kind = 'lease_reclaimed'")
            .await;
    ChaosReport {
        tasks,
        lost: unfinished + missing_events,
        duplicated: duplicated + events_twice,
        stale_accepted,
        stale_rejected,
        lease_losses,
        ..Default::default()
    }
}

/// Script starts of a grant later than the moment that grant was lost:
/// (task, epoch, script_started_ms, lost_ms). Empty = no zombie write.
pub async fn zombie_writes(pool: &PgPool, run: i64) -> Vec<(i64, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT * FROM (
           SELECT a.work_item_id, a.epoch, (a.body->>'script_started_ms')::int8 AS started,
             (SELECT min((extract(epoch FROM l.ts) * 1000)::int8) FROM run_events l
               WHERE l.work_item_id = a.work_item_id
                 AND ((l.kind = 'lease_reclaimed' AND l.epoch = a.epoch)
                   OR (l.kind = 'lease_acquired' AND l.epoch > a.epoch))) AS lost
           FROM run_events a
           WHERE a.run_id = $1 AND a.kind = 'attempt_evaluated' AND a.body ? 'script_started_ms'
         ) s WHERE lost IS NOT NULL AND started > lost ORDER BY 1, 2, 3",
    )
    .bind(run)
    .fetch_all(pool)
    .await
    .expect("zombie writes")
}

/// For each kill, the time until the task was granted again (kills of a
/// lease that had already been completed do not count).
pub async fn recovery(pool: &PgPool, kills: &[Kill]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut by_task: HashMap<i64, Vec<&Kill>> = HashMap::new();
    for k in kills {
        by_task.entry(k.task.0).or_default().push(k);
    }
    for (task, ks) in by_task {
        for k in ks {
            let next: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                "SELECT min(ts) FROM run_events WHERE work_item_id = $1 AND kind = 'lease_acquired' AND epoch > $2",
            )
            .bind(task)
            .bind(k.epoch as i64)
            .fetch_one(pool)
            .await
            .unwrap();
            if let Some(ts) = next {
                out.push((ts.timestamp_millis() - k.at_ms).max(0) as u64);
            }
        }
    }
    out
}

/// The `p` quantile (nearest rank) of `values`; 0 when empty.
pub fn percentile(values: &[u64], p: f64) -> u64 {
    let mut v = values.to_vec();
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}
