//! Multi-host chaos: agents in containers on a private Docker network, and
//! the faults a fleet meets in production — agents SIGKILLed and `docker
//! kill`ed mid-lease, paused past their TTL (zombies), cut off from the
//! network past their TTL; Redis restarted with its data and empty;
//! Postgres restarted; the coordinator restarted; a target container killed
//! under its agent. Then [`check`] over Postgres, Redis and the knowledge
//! repo. Used by the short test in `make test` and by `make chaos-hosts`.
//!
//! - [`docker`]: the Docker CLI, networks and containers.
//! - [`image`]: the agent host image (debootstrap base + agent binary).
//! - [`postgres`]: a Postgres cluster of the run's own, to restart.
//! - [`fleet`]: coordinator, Redis and Postgres here; agents in containers.
//! - [`check`]: the total-queue checker.

pub mod check;
pub mod docker;
pub mod fleet;
pub mod image;
pub mod postgres;

use std::time::{Duration, Instant};

use fleet_common::{Budgets, RunId, TaskId};
use rand::Rng;

use self::check::{main_fast_forward_only, main_tip, Verdict};
use self::fleet::{docker_target_image, HostFleet, HostsOpts};

/// Rules of the Debian 11 standard profile the Docker-target agent runs:
/// quick to evaluate, some fixed by SSG's content, some escalated.
pub const TARGET_RULES: [&str; 8] = [
    "package_audit_installed",
    "file_owner_etc_passwd",
    "file_permissions_etc_passwd",
    "sysctl_fs_suid_dumpable",
    "file_groupowner_etc_group",
    "sshd_disable_root_login",
    "package_telnetd_removed",
    "file_permissions_etc_shadow",
];

#[derive(Debug, Clone)]
pub struct HostsPlan {
    /// Simulated tasks of the first run.
    pub tasks: usize,
    /// Agent containers on the simulation.
    pub agents: usize,
    pub sim_work_ms: u64,
    /// Time between kills of a lease holder.
    pub kill_every: Duration,
    /// Time between the larger faults (pause, partition, restarts), which
    /// take turns.
    pub fault_every: Duration,
    /// How many of each larger fault.
    pub pauses: usize,
    pub partitions: usize,
    pub redis_restarts: usize,
    pub pg_restarts: usize,
    pub coordinator_restarts: usize,
    /// Completions an in-process zombie attempts after overstaying a lease.
    pub zombie_completions: usize,
    /// Rules of the real profile run on one Docker-target agent, whose
    /// target container is killed under it this many times; 0: skip.
    pub target_rules: Vec<String>,
    pub target_kills: usize,
    pub timeout: Duration,
}

impl HostsPlan {
    /// The version inside `make test` (a few minutes).
    pub fn short() -> Self {
        Self {
            tasks: 400,
            agents: 4,
            sim_work_ms: 40,
            kill_every: Duration::from_millis(700),
            fault_every: Duration::from_secs(4),
            pauses: 1,
            partitions: 1,
            redis_restarts: 2,
            pg_restarts: 1,
            coordinator_restarts: 1,
            zombie_completions: 2,
            target_rules: TARGET_RULES[..3].iter().map(|r| r.to_string()).collect(),
            target_kills: 1,
            timeout: Duration::from_secs(420),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct HostsReport {
    pub tasks: u64,
    pub agents: usize,
    /// Simulated runs it took for every fault to land mid-run (a run that
    /// drained first was followed by another).
    pub sim_runs: usize,
    pub kills: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub redis_restarts: u64,
    pub pg_restarts: u64,
    pub coordinator_restarts: u64,
    pub target_kills: u64,
    pub zombie_attempts: u64,
    pub verdict: Verdict,
    /// `main` moved only by fast-forward across every tip sampled.
    pub main_ff_only: bool,
    pub main_tips: usize,
    pub leftover_worktrees: Vec<String>,
    pub leftover_containers: Vec<String>,
    /// From a kill to its task's next grant, and from the end of a larger
    /// fault to the fleet's next accepted outcome, ms.
    pub recovery_ms: Vec<u64>,
}

impl HostsReport {
    pub fn recovery_p99(&self) -> u64 {
        crate::chaos::percentile(&self.recovery_ms, 0.99)
    }

    pub fn ok(&self) -> bool {
        self.verdict.clean()
            && self.main_ff_only
            && self.leftover_worktrees.is_empty()
            && self.leftover_containers.is_empty()
    }

    pub fn line(&self) -> String {
        let v = &self.verdict;
        format!(
            "chaos-hosts: tasks={} agents={} kills={} pauses={} partitions={} redis_restarts={} pg_restarts={} coordinator_restarts={} lost={} duplicated={} stale_accepted={} recovery_p99_ms={} target_kills={} lease_losses={} stale_rejected={} zombie_writes={} branches_missing={} leftovers={} main_ff_only={} sim_runs={}",
            v.tasks,
            self.agents,
            self.kills,
            self.pauses,
            self.partitions,
            self.redis_restarts,
            self.pg_restarts,
            self.coordinator_restarts,
            v.lost,
            v.duplicated,
            v.stale_accepted,
            self.recovery_p99(),
            self.target_kills,
            v.lease_losses,
            v.stale_rejected,
            v.zombie_writes,
            v.branches_missing.len(),
            self.leftover_worktrees.len() + self.leftover_containers.len() + v.redis_leftovers as usize,
            self.main_ff_only,
            self.sim_runs,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Pause,
    Partition,
    RedisRestart { keep_data: bool },
    PgRestart,
    CoordinatorRestart,
}

/// The larger faults in the order they take turns.
fn schedule(plan: &HostsPlan) -> Vec<Fault> {
    let mut queues = [
        vec![Fault::Pause; plan.pauses],
        vec![Fault::Partition; plan.partitions],
        (0..plan.redis_restarts)
            .map(|i| Fault::RedisRestart {
                keep_data: i % 2 == 0,
            })
            .collect(),
        vec![Fault::PgRestart; plan.pg_restarts],
        vec![Fault::CoordinatorRestart; plan.coordinator_restarts],
    ];
    let mut out = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        for q in &mut queues {
            if !q.is_empty() {
                out.push(q.remove(0));
            }
        }
    }
    out
}

/// A leased task, its epoch and the index of the agent holding it.
async fn random_holder(fleet: &HostFleet) -> Option<(TaskId, u64, usize)> {
    let (task, epoch, agent) = crate::chaos::random_holder(&fleet.leases).await?;
    let slot = fleet.agents.iter().position(|a| a.id == agent)?;
    Some((task, epoch, slot))
}

pub async fn run(plan: HostsPlan) -> HostsReport {
    let mut fleet = HostFleet::start(HostsOpts {
        agents: plan.agents,
        sim_work_ms: plan.sim_work_ms,
    })
    .await;
    let mut report = HostsReport {
        agents: plan.agents + usize::from(!plan.target_rules.is_empty()),
        ..Default::default()
    };
    let mut tips: Vec<String> = main_tip(&fleet.knowledge_dir()).into_iter().collect();
    let logs = fleet.logs.display().to_string();
    let ttl = fleet.leases.settings().ttl();

    // ---- the simulation under every fault but the target kill ----
    // A run that drains before every fault happened is followed by another,
    // so that each fault lands mid-run however fast the machine is.
    let mut runs = vec![submit_sim(&fleet, plan.tasks).await];
    let zombie = tokio::spawn(crate::chaos::zombie(
        fleet.leases.clone(),
        ttl,
        plan.zombie_completions,
    ));
    let started = Instant::now();
    let mut faults = schedule(&plan).into_iter().peekable();
    let mut next_fault = Instant::now() + plan.fault_every;
    let mut restart_at: Vec<(usize, Instant)> = Vec::new();
    let mut kills = Vec::new();
    let mut fault_ends = Vec::new();
    let mut docker_kill = false;
    loop {
        let run = *runs.last().expect("a run");
        if let Some(s) = fleet.api.try_status(run).await {
            if s.status == "completed" {
                if faults.peek().is_none() {
                    break;
                }
                runs.push(submit_sim(&fleet, plan.tasks).await);
                continue;
            }
        }
        assert!(
            started.elapsed() < plan.timeout,
            "run {run} not finished in {:?}; logs in {logs}",
            plan.timeout
        );
        tokio::time::sleep(plan.kill_every).await;
        tips.extend(main_tip(&fleet.knowledge_dir()));
        let now = Instant::now();
        for (i, _) in restart_at.iter().filter(|(_, t)| *t <= now) {
            fleet.restart_agent(*i);
        }
        restart_at.retain(|(_, t)| *t > now);

        if now >= next_fault {
            if let Some(fault) = faults.next() {
                if inject(&mut fleet, &mut report, fault, ttl).await {
                    fault_ends.push(crate::chaos::now_ms());
                }
                next_fault = Instant::now() + plan.fault_every;
                continue;
            }
        }
        let Some((task, epoch, slot)) = random_holder(&fleet).await else {
            continue;
        };
        if restart_at.iter().any(|(i, _)| *i == slot) || !fleet.agent_running(slot) {
            continue;
        }
        let at_ms = crate::chaos::now_ms();
        // Both ways an agent host dies: its process SIGKILLed from the
        // host, and the container killed by the engine.
        docker_kill = !docker_kill;
        if docker_kill {
            docker::must(&["kill", &fleet.agents[slot].container]);
        } else if let Some(pid) = docker::host_pid(&fleet.agents[slot].container) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        kills.push(crate::chaos::Kill { task, epoch, at_ms });
        let downtime = Duration::from_millis(rand::rng().random_range(100..600));
        restart_at.push((slot, Instant::now() + downtime));
    }
    // Faults not reached before the run drained still count as not done.
    for (i, _) in restart_at {
        fleet.restart_agent(i);
    }
    let (zombie_attempts, zombie_accepted) = zombie.await.expect("zombie task");
    report.zombie_attempts = zombie_attempts;
    report.kills = kills.len() as u64;
    fleet.stop_agents();
    fleet.wait_ingested(Duration::from_secs(60)).await;
    report.sim_runs = runs.len();
    let mut verdict = Verdict::default();
    for &run in &runs {
        verdict.add(check::check(&fleet, run).await);
    }
    verdict.stale_accepted += zombie_accepted;
    report.recovery_ms = crate::chaos::recovery(&fleet.pool, &kills).await;
    report
        .recovery_ms
        .extend(next_outcome_after(&fleet, &runs, &fault_ends).await);

    // ---- run 2: real targets, one killed under its agent ----
    if !plan.target_rules.is_empty() {
        let v = target_phase(&mut fleet, &plan, &mut report, &logs).await;
        verdict.add(v);
    }
    tips.extend(main_tip(&fleet.knowledge_dir()));
    report.verdict = verdict;
    report.main_tips = tips.len();
    report.main_ff_only = main_fast_forward_only(&fleet.knowledge_dir(), &tips);
    report.leftover_worktrees = fleet.leftover_worktrees();
    report.leftover_containers = fleet.leftover_targets();
    fleet.shutdown().await;
    report
}

/// Injects one larger fault; true when it happened.
async fn inject(
    fleet: &mut HostFleet,
    report: &mut HostsReport,
    fault: Fault,
    ttl: Duration,
) -> bool {
    tracing::info!(?fault, "injecting");
    match fault {
        Fault::Pause | Fault::Partition => {
            let Some((_, _, slot)) = random_holder(fleet).await else {
                return false;
            };
            let container = fleet.agents[slot].container.clone();
            if !fleet.agent_running(slot) {
                return false;
            }
            // Past the TTL, so the lease is reclaimed while the agent is
            // away; it then comes back believing it still holds it.
            let away = ttl + Duration::from_millis(1500);
            if fault == Fault::Pause {
                docker::must(&["kill", "--signal", "SIGSTOP", &container]);
                tokio::time::sleep(away).await;
                docker::must(&["kill", "--signal", "SIGCONT", &container]);
                report.pauses += 1;
            } else {
                fleet.net.disconnect(&container);
                tokio::time::sleep(away).await;
                fleet.net.connect(&container);
                report.partitions += 1;
            }
        }
        Fault::RedisRestart { keep_data } => {
            fleet.redis.restart(keep_data).await;
            report.redis_restarts += 1;
        }
        Fault::PgRestart => {
            fleet.pg.restart(Duration::from_millis(1500)).await;
            report.pg_restarts += 1;
        }
        Fault::CoordinatorRestart => {
            fleet.restart_coordinator(Duration::from_millis(1000)).await;
            report.coordinator_restarts += 1;
        }
    }
    true
}

/// `tasks` simulated rules in a new run.
async fn submit_sim(fleet: &HostFleet, tasks: usize) -> RunId {
    let rules = (0..tasks).map(|i| format!("hosts_rule_{i:05}")).collect();
    fleet
        .api
        .submit_with("sim-demo", rules, Budgets::default())
        .await
        .run
}

/// For each time, how long until the next accepted agent outcome of `runs`.
async fn next_outcome_after(fleet: &HostFleet, runs: &[RunId], at_ms: &[i64]) -> Vec<u64> {
    let runs: Vec<i64> = runs.iter().map(|r| r.0).collect();
    let mut out = Vec::new();
    for &t in at_ms {
        let next: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT min(ts) FROM run_events WHERE run_id = ANY($1) AND kind = 'task_completed'
               AND rejected IS NULL AND agent_id <> 'coordinator' AND ts > to_timestamp($2::double precision / 1000)",
        )
        .bind(&runs)
        .bind(t)
        .fetch_one(&fleet.pool)
        .await
        .expect("next outcome");
        if let Some(ts) = next {
            out.push((ts.timestamp_millis() - t).max(0) as u64);
        }
    }
    out
}

/// One agent on Docker targets runs a few real rules; its target container
/// is killed under it while it holds a lease.
async fn target_phase(
    fleet: &mut HostFleet,
    plan: &HostsPlan,
    report: &mut HostsReport,
    logs: &str,
) -> Verdict {
    let image = docker_target_image();
    let slot = fleet.add_docker_agent(&image);
    let agent = fleet.agents[slot].id.clone();
    let run = fleet
        .api
        .submit_with(
            "ssg-debian11-standard",
            plan.target_rules.clone(),
            Budgets::default(),
        )
        .await
        .run;
    let started = Instant::now();
    while (report.target_kills as usize) < plan.target_kills {
        assert!(
            started.elapsed() < plan.timeout,
            "no lease on a live target to kill in {:?}; logs in {logs}",
            plan.timeout
        );
        // A run that drains first ends with fewer kills than planned, which
        // the report shows.
        if fleet
            .api
            .try_status(run)
            .await
            .is_some_and(|s| s.status == "completed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let holding = random_holder(fleet)
            .await
            .is_some_and(|(_, _, s)| s == slot);
        let running: Vec<String> = docker::targets_of(&agent)
            .into_iter()
            .filter(|t| {
                docker::docker(&["inspect", "-f", "{{.State.Running}}", t])
                    .is_ok_and(|s| s == "true")
            })
            .collect();
        if holding && !running.is_empty() {
            for t in &running {
                let _ = docker::docker(&["kill", t]);
            }
            report.target_kills += 1;
            // Let the agent recover its target and lease again first.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    fleet.api.wait_completed(run, plan.timeout, logs).await;
    fleet.stop_agents();
    fleet.wait_ingested(Duration::from_secs(60)).await;
    check::check(fleet, run).await
}
