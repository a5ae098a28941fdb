//! `fleet-bench scale`: the real coordinator process against simulated
//! agents ([`crate::loadgen`]) at growing fleet sizes, Redis bytes per task
//! at two queue sizes, and the coordinator's resident memory.
//!
//! * `tasks_per_s`: accepted completions per second during a fixed window
//!   at each fleet size, once the first tasks had time to finish (each
//!   agent's task takes `work`, so the ideal is agents / work; what falls
//!   short of it is the protocol's cost: `tasks_per_s_of_ideal`).
//! * `redis_bytes_per_task`: `MEMORY USAGE` of every key under a fresh
//!   prefix holding N queued tasks, a tenth of them leased, divided by N;
//!   at 10,000 and 100,000 tasks (goal: equal within 10 %). The same split
//!   in two: per queued task before any lease, and per in-flight lease
//!   (what leasing the tenth added, divided by the leases).
//! * `coordinator_rss_mb_start/end`: `VmRSS` of the coordinator once it has
//!   ingested every event of the last (largest) point, which warms it up at
//!   full load, and again after a long soak at that fleet size (goal: end
//!   within 20 % of start).

use std::time::{Duration, Instant};

use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, FleetOpts};
use crate::loadgen::{bench_run, LoadGen};
use crate::queue::{agent, tasks, TestQueue};
use crate::services::redis_url;

pub struct ScaleConfig {
    pub points: Vec<usize>,
    /// Measuring window per point.
    pub window: Duration,
    /// Simulated work per task.
    pub work: Duration,
    /// Queue sizes of the memory measurement.
    pub memory_tasks: [usize; 2],
    /// Redis connections the simulated agents share, at most.
    pub max_connections: usize,
    /// The soak at the largest fleet size between the two RSS readings.
    pub soak: Duration,
}

impl ScaleConfig {
    pub fn full() -> Self {
        Self {
            points: vec![1, 8, 64, 512, 1024],
            window: Duration::from_secs(20),
            work: Duration::from_millis(2000),
            memory_tasks: [10_000, 100_000],
            max_connections: 256,
            soak: Duration::from_secs(120),
        }
    }

    /// For iterating: short windows, the same points.
    pub fn quick() -> Self {
        Self {
            window: Duration::from_secs(6),
            memory_tasks: [2_000, 20_000],
            soak: Duration::from_secs(30),
            ..Self::full()
        }
    }
}

pub struct ScaleFigures {
    pub points: Vec<(usize, f64)>,
    /// Simulated work per task: `agents / work` is each point's ideal rate.
    pub work: Duration,
    pub redis: Vec<RedisBytes>,
    pub rss_mb_start: f64,
    /// Sampled evenly over the soak, under load.
    pub rss_mb_soak: Vec<f64>,
    pub rss_mb_end: f64,
    pub stream_len_end: u64,
    pub lost: u64,
}

impl ScaleFigures {
    pub fn line(&self) -> String {
        let join = |v: Vec<String>| v.join(",");
        let agents = join(self.points.iter().map(|(a, _)| a.to_string()).collect());
        let rates = join(
            self.points
                .iter()
                .map(|(_, r)| {
                    if *r < 10.0 {
                        format!("{r:.1}")
                    } else {
                        format!("{r:.0}")
                    }
                })
                .collect(),
        );
        let of_ideal = join(
            self.points
                .iter()
                .map(|(a, r)| format!("{:.2}", r * self.work.as_secs_f64() / *a as f64))
                .collect(),
        );
        let last = self.redis.last().map_or(0.0, |r| r.per_task);
        let at = |f: fn(&RedisBytes) -> f64| {
            join(
                self.redis
                    .iter()
                    .map(|r| format!("{}:{:.0}", r.tasks, f(r)))
                    .collect(),
            )
        };
        format!(
            "bench scale: agents={agents} tasks_per_s={rates} redis_bytes_per_task={last:.0} \
             coordinator_rss_mb_start={:.1} coordinator_rss_mb_end={:.1} coordinator_rss_mb_soak={} \
             redis_bytes_per_task_at={} redis_bytes_per_queued_at={} redis_bytes_per_lease_at={} \
             tasks_per_s_of_ideal={of_ideal} stream_len_end={} leases_lost={} goals_missed={}",
            self.rss_mb_start,
            self.rss_mb_end,
            join(self.rss_mb_soak.iter().map(|m| format!("{m:.1}")).collect()),
            at(|r| r.per_task),
            at(|r| r.per_queued),
            at(|r| r.per_lease),
            self.stream_len_end,
            self.lost,
            self.goals_missed()
        )
    }

    /// The goals this run missed, comma-separated, or `none`.
    pub fn goals_missed(&self) -> String {
        // Not falling: each point from 64 agents on at least the one before,
        // give or take 2 % of window jitter.
        let from_64: Vec<f64> = self
            .points
            .iter()
            .filter(|(a, _)| *a >= 64)
            .map(|(_, r)| *r)
            .collect();
        let not_falling = self.points.iter().any(|(a, _)| *a == 64)
            && from_64.windows(2).all(|w| w[1] >= w[0] * 0.98);
        let equal_bytes = match (self.redis.first(), self.redis.last()) {
            (Some(a), Some(b)) => within(a.per_task, b.per_task, 0.10),
            _ => false,
        };
        let flat_rss = self.rss_mb_end <= self.rss_mb_start * 1.2;
        let missed: Vec<&str> = [
            (not_falling, "tasks_per_s_falls"),
            (equal_bytes, "redis_bytes_grow"),
            (flat_rss, "rss_grows"),
        ]
        .into_iter()
        .filter(|(met, _)| !met)
        .map(|(_, name)| name)
        .collect();
        if missed.is_empty() {
            "none".into()
        } else {
            missed.join(",")
        }
    }
}

/// `a` and `b` differ by at most `fraction` of the larger.
fn within(a: f64, b: f64, fraction: f64) -> bool {
    (a - b).abs() <= fraction * a.abs().max(b.abs())
}

/// RSS readings over each phase's window.
const RSS_SAMPLES: usize = 6;

pub async fn bench_scale(cfg: &ScaleConfig) -> anyhow::Result<ScaleFigures> {
    let mut redis = Vec::new();
    for n in cfg.memory_tasks {
        redis.push(redis_bytes(n).await?);
    }

    let mut fleet = Fleet::start(FleetOpts {
        agents: 0,
        auto_dream: false,
        ..FleetOpts::default()
    })
    .await;
    let pid = fleet.coordinator.as_ref().expect("coordinator").pid();
    let max = cfg.points.iter().copied().max().unwrap_or(1);
    let mut clients = Vec::new();
    for _ in 0..max.min(cfg.max_connections) {
        clients.push(
            LeaseClient::connect(&redis_url(), fleet.keys.clone(), LeaseSettings::default())
                .await?,
        );
    }
    let load = LoadGen::new(cfg.work);
    let phase = |name: String, n: usize, window: Duration| {
        let (fleet, load, clients) = (&fleet, &load, &clients);
        async move {
            let per_agent =
                ((window + cfg.work).as_secs_f64() / cfg.work.as_secs_f64()).ceil() as usize + 2;
            let queued = bench_run(&fleet.db.pool, (n * per_agent) as i64).await?;
            for chunk in queued.chunks(10_000) {
                fleet.leases.enqueue(chunk).await?;
            }
            let stop = CancellationToken::new();
            let accepted = || {
                load.tally
                    .accepted
                    .load(std::sync::atomic::Ordering::Relaxed)
            };
            let mut set = load.start(&name, n, &clients[..clients.len().min(n)], &stop);
            // No task can finish within its first `work`: the window starts
            // after it, so that the rate is the steady one.
            tokio::time::sleep(cfg.work).await;
            let before = accepted();
            let started = Instant::now();
            // RSS six times over the window, to show its course over a soak.
            let mut rss = Vec::new();
            for _ in 0..RSS_SAMPLES {
                tokio::time::sleep(window / RSS_SAMPLES as u32).await;
                rss.push(rss_mb(pid.as_raw())?);
            }
            let rate = (accepted() - before) as f64 / started.elapsed().as_secs_f64();
            stop.cancel();
            while let Some(r) = set.join_next().await {
                r??;
            }
            eprintln!(
                "bench scale: {name} agents={n} tasks_per_s={rate:.1} coordinator_rss_mb={:.1}",
                rss_mb(pid.as_raw())?
            );
            anyhow::Ok((rate, rss))
        }
    };
    let mut points = Vec::new();
    for (k, &n) in cfg.points.iter().enumerate() {
        points.push((n, phase(format!("sim{k}"), n, cfg.window).await?.0));
    }
    // The largest point was the warm-up at full load; the soak at the same
    // size shows whether memory keeps growing.
    wait_ingested(&fleet, &load).await?;
    let rss_mb_start = rss_mb(pid.as_raw())?;
    let (_, rss_mb_soak) = phase("soak".into(), max, cfg.soak).await?;
    wait_ingested(&fleet, &load).await?;
    let rss_mb_end = rss_mb(pid.as_raw())?;
    let stream_len_end: u64 = fleet.leases.connection().xlen(fleet.keys.events()).await?;
    let lost = load.tally.lost.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(c) = fleet.coordinator.take() {
        c.terminate(Duration::from_secs(10)).await;
    }
    fleet.db.drop_schema().await?;
    Ok(ScaleFigures {
        points,
        work: cfg.work,
        redis,
        rss_mb_start,
        rss_mb_soak,
        rss_mb_end,
        stream_len_end,
        lost,
    })
}

/// Waits until Postgres holds every accepted outcome (the coordinator has
/// ingested everything the agents sent).
async fn wait_ingested(fleet: &Fleet, load: &LoadGen) -> anyhow::Result<()> {
    let want = load
        .tally
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed) as i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM work_items WHERE state = 'done'")
            .fetch_one(&fleet.db.pool)
            .await?;
        if done >= want {
            anyhow::ensure!(done == want, "{done} outcomes in postgres, {want} accepted");
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "ingest did not catch up: {done} of {want} outcomes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rss_mb(pid: i32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))?;
    Ok(kb / 1024.0)
}

/// Redis bytes of one queue size: per task with a tenth of them leased (the
/// headline figure), and split into per queued task (none leased yet) and
/// per in-flight lease (what leasing a tenth added, per lease).
#[derive(Debug, Clone, Copy)]
pub struct RedisBytes {
    pub tasks: usize,
    pub per_task: f64,
    pub per_queued: f64,
    pub per_lease: f64,
}

/// Redis bytes of `n` queued tasks under a fresh prefix, then with a tenth
/// of them leased.
async fn redis_bytes(n: usize) -> anyhow::Result<RedisBytes> {
    let q = TestQueue::new(LeaseSettings::default()).await;
    for start in (1..=n as i64).step_by(10_000) {
        q.client
            .enqueue(&tasks(1, start, 10_000.min(n as i64 - start + 1), 5))
            .await?;
    }
    q.client.set_generation(1).await?;
    let queued = prefix_bytes(&q).await?;
    let me = agent("bytes");
    let leases = n / 10;
    for _ in 0..leases {
        q.client.lease(&me).await?.expect("a queued task");
    }
    let with_leases = prefix_bytes(&q).await?;
    q.wipe().await;
    Ok(RedisBytes {
        tasks: n,
        per_task: with_leases as f64 / n as f64,
        per_queued: queued as f64 / n as f64,
        per_lease: (with_leases as f64 - queued as f64) / leases.max(1) as f64,
    })
}

/// `MEMORY USAGE` of every key under the queue's prefix.
async fn prefix_bytes(q: &TestQueue) -> anyhow::Result<u64> {
    let mut conn = q.conn();
    let keys: Vec<String> = {
        let mut iter: redis::AsyncIter<String> =
            conn.scan_match(format!("{}*", q.keys.prefix())).await?;
        let mut v = Vec::new();
        while let Some(k) = iter.next_item().await {
            v.push(k?);
        }
        v
    };
    let mut total = 0u64;
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        total += sizes.into_iter().flatten().sum::<u64>();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(rates: &[f64], bytes: [f64; 2], rss: (f64, f64)) -> ScaleFigures {
        let redis = [10_000, 100_000]
            .into_iter()
            .zip(bytes)
            .map(|(tasks, per_task)| RedisBytes {
                tasks,
                per_task,
                per_queued: per_task,
                per_lease: 0.0,
            })
            .collect();
        ScaleFigures {
            points: [1, 8, 64, 512, 1024]
                .into_iter()
                .zip(rates.iter().copied())
                .collect(),
            work: Duration::from_secs(2),
            redis,
            rss_mb_start: rss.0,
            rss_mb_soak: vec![],
            rss_mb_end: rss.1,
            stream_len_end: 0,
            lost: 0,
        }
    }

    #[test]
    fn goals_are_met_only_when_each_holds() {
        let good = [0.4, 3.6, 29.0, 230.0, 461.0];
        assert_eq!(
            figures(&good, [1087.0, 1067.0], (22.2, 24.0)).goals_missed(),
            "none"
        );
        let falling = [0.4, 3.6, 29.0, 230.0, 200.0];
        assert_eq!(
            figures(&falling, [1087.0, 1067.0], (22.2, 24.0)).goals_missed(),
            "tasks_per_s_falls"
        );
        assert_eq!(
            figures(&good, [1000.0, 1200.0], (20.0, 24.1)).goals_missed(),
            "redis_bytes_grow,rss_grows"
        );
    }
}
