//! `make chaos`: a long chaos run that ends with one summary line.

use std::time::Duration;

use clap::Parser;
use fleet_tests::chaos::{run, ChaosPlan};

/// Runs coordinator + agents as real processes, SIGKILLs lease holders and
/// pauses agents past their TTL, then checks that every task has exactly one
/// accepted outcome and no event was lost.
#[derive(Parser)]
struct Args {
    /// Rule tasks in the run.
    #[arg(long, default_value_t = 3000)]
    tasks: usize,
    /// Agent processes.
    #[arg(long, default_value_t = 8)]
    agents: usize,
    /// Simulated work per attempt, in ms.
    #[arg(long, default_value_t = 30)]
    sim_work_ms: u64,
    /// Milliseconds between kills.
    #[arg(long, default_value_t = 400)]
    kill_every_ms: u64,
    /// Agents paused past their TTL.
    #[arg(long, default_value_t = 3)]
    pauses: usize,
    /// Completions a zombie attempts after its lease expired.
    #[arg(long, default_value_t = 10)]
    zombie_completions: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let report = run(ChaosPlan {
        tasks: a.tasks,
        agents: a.agents,
        sim_work_ms: a.sim_work_ms,
        kill_every: Duration::from_millis(a.kill_every_ms),
        pauses: a.pauses,
        zombie_completions: a.zombie_completions,
        timeout: Duration::from_secs(a.timeout_s),
    })
    .await;
    println!("{}", report.line());
    let ok = report.lost == 0 && report.duplicated == 0 && report.stale_accepted == 0;
    std::process::exit(if ok { 0 } else { 1 });
}
