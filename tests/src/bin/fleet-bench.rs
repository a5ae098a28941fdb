//! `make bench`: figures with a baseline measured in the same run.
//!
//! `bench lease`: 64 simulated agents run full lease cycles (lease + one
//! renew + complete with its event) on the real scripts, against
//! `redis-benchmark` running EVALSHA of a no-op script with the same number
//! of clients on the same Redis, right after.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use fleet_common::lease::{Completion, LeaseClient};
use fleet_common::settings::LeaseSettings;
use fleet_common::Outcome;
use fleet_tests::queue::{agent, completion, tasks, TestQueue};
use fleet_tests::services::redis_url;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Which {
    All,
    Lease,
}

#[derive(Parser)]
struct Args {
    /// Which benchmark to run.
    #[arg(value_enum, default_value = "all")]
    which: Which,
    /// Concurrent simulated agents (and redis-benchmark clients).
    #[arg(long, default_value_t = 64)]
    agents: usize,
    /// Measured seconds per side.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if matches!(args.which, Which::All | Which::Lease) {
        bench_lease(args.agents, Duration::from_secs(args.seconds)).await?;
    }
    Ok(())
}

async fn bench_lease(agents: usize, measure: Duration) -> anyhow::Result<()> {
    let settings = LeaseSettings::default();
    let q = TestQueue::new(settings).await;
    // Enough tasks that the queue never runs dry during the measurement.
    let total = 400_000i64;
    for start in (1..=total).step_by(20_000) {
        q.client.enqueue(&tasks(1, start, 20_000, 5)).await?;
    }
    q.client.set_generation(1).await?;

    let cycles = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let deadline = Instant::now() + measure;
    let mut handles = Vec::new();
    for i in 0..agents {
        // One connection per agent, as separate agent processes would have.
        let client: LeaseClient = q.peer(settings).await;
        let cycles = cycles.clone();
        handles.push(tokio::spawn(async move {
            let me = agent(&format!("bench-{i}"));
            let mut seq = 0;
            while Instant::now() < deadline {
                let Some(lease) = client.lease(&me).await? else { break };
                client.renew(&lease).await?;
                seq += 1;
                let done = completion(&lease, Outcome::Fixed { attempt: 1 }, seq);
                anyhow::ensure!(client.complete(&lease, &done).await? == Completion::Accepted);
                cycles.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for h in handles {
        h.await??;
    }
    stop.notify_waiters();
    let cycles_per_s = cycles.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    q.wipe().await;

    let raw = raw_evalsha(agents, measure)?;
    println!(
        "bench lease: agents={agents} cycles_per_s={cycles_per_s:.0} raw_evalsha_per_s={raw:.0} ratio={:.2}",
        cycles_per_s / raw
    );
    Ok(())
}

/// redis-benchmark's EVALSHA rate for a no-op script on the same Redis.
fn raw_evalsha(clients: usize, measure: Duration) -> anyhow::Result<f64> {
    let url = redis::Client::open(redis_url().as_str())?;
    let info = url.get_connection_info();
    let (host, port) = match &info.addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        other => anyhow::bail!("bench needs a tcp redis url, got {other:?}"),
    };
    let mut conn = url.get_connection()?;
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg("return 1").query(&mut conn)?;
    // Size the request count so the run lasts about `measure`.
    let requests = 60_000 * measure.as_secs().max(1);
    let out = Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port.to_string(), "-c", &clients.to_string()])
        .args(["-n", &requests.to_string(), "-q", "EVALSHA", &sha, "0"])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run redis-benchmark ({e}): run `make deps`"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // -q prints "EVALSHA ...: 52000.00 requests per second, p50=..." with
    // carriage-return progress before it.
    let last = text.rsplit('\r').next().unwrap_or(&text);
    let rate = last
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("cannot parse redis-benchmark output: {text:?}"))?;
    Ok(rate)
}
