//! `fleet-bench scale`: the real coordinator process against simulated
//! agents ([`crate::loadgen`]) at growing fleet sizes, Redis bytes per task
//! at two queue sizes, and the coordinator's resident memory.
//!
//! * `tasks_per_s`: accepted completions per second during a fixed window
//!   at each fleet size (each agent's task takes `work`, so the ideal is
//!   agents / work; what falls short of it is the protocol's cost).
//! * `redis_bytes_per_task`: `MEMORY USAGE` of every key under a fresh
//!   prefix holding N queued tasks, a tenth of them leased, divided by N;
//!   at 10,000 and 100,000 tasks (goal: equal within 10 %).
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
    pub bytes_per_task: Vec<(usize, f64)>,
    pub rss_mb_start: f64,
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
        let last = self.bytes_per_task.last().map_or(0.0, |(_, b)| *b);
        let at = join(
            self.bytes_per_task
                .iter()
                .map(|(n, b)| format!("{n}:{b:.0}"))
                .collect(),
        );
        format!(
            "bench scale: agents={agents} tasks_per_s={rates} redis_bytes_per_task={last:.0} \
             coordinator_rss_mb_start={:.1} coordinator_rss_mb_end={:.1} \
             redis_bytes_per_task_at={at} stream_len_end={} leases_lost={}",
            self.rss_mb_start, self.rss_mb_end, self.stream_len_end, self.lost
        )
    }
}

pub async fn bench_scale(cfg: &ScaleConfig) -> anyhow::Result<ScaleFigures> {
    let bytes_per_task = {
        let mut v = Vec::new();
        for n in cfg.memory_tasks {
            v.push((n, redis_bytes_per_task(n).await?));
        }
        v
    };

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
            let per_agent = (window.as_secs_f64() / cfg.work.as_secs_f64()).ceil() as usize + 2;
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
            let before = accepted();
            let mut set = load.start(&name, n, &clients[..clients.len().min(n)], &stop);
            let started = Instant::now();
            tokio::time::sleep(window).await;
            let rate = (accepted() - before) as f64 / started.elapsed().as_secs_f64();
            stop.cancel();
            while let Some(r) = set.join_next().await {
                r??;
            }
            eprintln!(
                "bench scale: {name} agents={n} tasks_per_s={rate:.1} coordinator_rss_mb={:.1}",
                rss_mb(pid.as_raw())?
            );
            anyhow::Ok(rate)
        }
    };
    let mut points = Vec::new();
    for (k, &n) in cfg.points.iter().enumerate() {
        points.push((n, phase(format!("sim{k}"), n, cfg.window).await?));
    }
    // The largest point was the warm-up at full load; the soak at the same
    // size shows whether memory keeps growing.
    wait_ingested(&fleet, &load).await?;
    let rss_mb_start = rss_mb(pid.as_raw())?;
    phase("soak".into(), max, cfg.soak).await?;
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
        bytes_per_task,
        rss_mb_start,
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

/// `MEMORY USAGE` of every key under a fresh prefix holding `n` queued
/// tasks, a tenth of them leased, per task.
async fn redis_bytes_per_task(n: usize) -> anyhow::Result<f64> {
    let q = TestQueue::new(LeaseSettings::default()).await;
    for start in (1..=n as i64).step_by(10_000) {
        q.client
            .enqueue(&tasks(1, start, 10_000.min(n as i64 - start + 1), 5))
            .await?;
    }
    q.client.set_generation(1).await?;
    let me = agent("bytes");
    for _ in 0..n / 10 {
        q.client.lease(&me).await?.expect("a queued task");
    }
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
    q.wipe().await;
    Ok(total as f64 / n as f64)
}
