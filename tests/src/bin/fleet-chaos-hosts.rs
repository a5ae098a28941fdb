//! `make chaos-hosts`: agents in containers on a private network under
//! every fault the fleet is built to survive; ends with one summary line.

use std::time::Duration;

use clap::Parser;
use fleet_tests::hosts::{run, HostsPlan, TARGET_RULES};

/// Starts the coordinator with its own Redis and Postgres, agent containers
/// on a private Docker network, and injects: SIGKILL and `docker kill` of
/// lease holders, pauses and network cuts past the TTL, Redis restarts
/// (with data and empty), Postgres and coordinator restarts, and a target
/// container killed under its agent. Then checks that every task has
/// exactly one accepted outcome, no event was lost or applied twice, no
/// stale completion or zombie write got through, and nothing was left over.
#[derive(Parser)]
struct Args {
    /// Simulated rule tasks.
    #[arg(long, default_value_t = 3000)]
    tasks: usize,
    /// Agent containers on the simulation.
    #[arg(long, default_value_t = 6)]
    agents: usize,
    /// Simulated work per attempt, in ms.
    #[arg(long, default_value_t = 40)]
    sim_work_ms: u64,
    /// Milliseconds between kills of a lease holder.
    #[arg(long, default_value_t = 600)]
    kill_every_ms: u64,
    /// Seconds between the larger faults.
    #[arg(long, default_value_t = 6)]
    fault_every_s: u64,
    /// How many of each larger fault: pauses, partitions, Postgres and
    /// coordinator restarts; Redis restarts twice as many (with its data,
    /// then empty, in turn).
    #[arg(long, default_value_t = 3)]
    each: usize,
    /// Target containers killed under the Docker-target agent.
    #[arg(long, default_value_t = 2)]
    target_kills: usize,
    /// Real rules the Docker-target agent runs (at most 8; 0 skips that
    /// phase).
    #[arg(long, default_value_t = 8)]
    target_rules: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let plan = HostsPlan {
        tasks: a.tasks,
        agents: a.agents,
        sim_work_ms: a.sim_work_ms,
        kill_every: Duration::from_millis(a.kill_every_ms),
        fault_every: Duration::from_secs(a.fault_every_s),
        pauses: a.each,
        partitions: a.each,
        redis_restarts: a.each * 2,
        pg_restarts: a.each,
        coordinator_restarts: a.each,
        zombie_completions: a.each * 3,
        target_kills: a.target_kills,
        target_rules: TARGET_RULES
            .iter()
            .take(a.target_rules)
            .map(|r| r.to_string())
            .collect(),
        timeout: Duration::from_secs(a.timeout_s),
    };
    // Interrupted: the run's future is dropped, which removes its
    // containers and network and stops its Redis and Postgres.
    let report = tokio::select! {
        r = run(plan) => r,
        _ = interrupted() => {
            eprintln!("chaos-hosts: interrupted; cleaned up");
            std::process::exit(130);
        }
    };
    println!("{}", report.line());
    if !report.ok() {
        eprintln!("chaos-hosts: FAILED: {report:#?}");
        std::process::exit(1);
    }
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
