//! DESIGN L4, T2: an agent paused (SIGSTOP) past its TTL while holding a
//! lease, then resumed (SIGCONT), must not start a write to its target once
//! the lease may be gone. After SIGCONT the remediation future can run
//! before the heartbeat task notices; the lease fence checked right before
//! every script exec stops it. Every `attempt_evaluated` event records when
//! its script started (`script_started_ms`); none of a grant (task, epoch e)
//! may have started after that grant was lost: its `lease_reclaimed` (epoch
//! e) or the task's next `lease_acquired` (epoch > e).

use std::time::{Duration, Instant};

use fleet_common::TaskId;
use fleet_tests::chaos::{check, zombie_writes};
use fleet_tests::fleet::{Fleet, FleetOpts};
use nix::sys::signal::Signal;
use rand::Rng;
use redis::AsyncCommands;

/// A leased task's holder slot, from Redis.
async fn a_holder(fleet: &Fleet) -> Option<(TaskId, usize)> {
    let mut conn = fleet.leases.connection();
    let leased: Vec<i64> = conn.zrange(fleet.keys.leases(), 0, -1).await.ok()?;
    let id = *leased.first()?;
    let agent: Option<String> = conn.hget(fleet.keys.task(TaskId(id)), "agent").await.ok()?;
    let slot = agent?
        .strip_prefix("agent-")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)?;
    Some((TaskId(id), slot))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_paused_past_their_ttl_write_nothing_once_the_lease_is_lost() {
    let mut fleet = Fleet::start(FleetOpts {
        agents: 3,
        // Long attempts: a pause most likely lands in the middle of one.
        sim_work_ms: 400,
        ..FleetOpts::default()
    })
    .await;
    let rules = (0..30).map(|i| format!("zombie_rule_{i:03}")).collect();
    let run = fleet.submit(rules).await;
    let ttl = fleet.leases.settings().ttl();

    let started = Instant::now();
    let mut pauses = 0;
    while pauses < 4 && fleet.status(run).await.status != "completed" {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "logs in {}",
            fleet.logs.display()
        );
        let Some((_, slot)) = a_holder(&fleet).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Somewhere inside an attempt: evaluation, script or proposal.
        let into = rand::rng().random_range(0..400);
        tokio::time::sleep(Duration::from_millis(into)).await;
        let Some(agent) = fleet.agents.get(slot).and_then(Option::as_ref) else {
            continue;
        };
        agent.signal(Signal::SIGSTOP);
        tokio::time::sleep(ttl + Duration::from_secs(1)).await;
        agent.signal(Signal::SIGCONT);
        pauses += 1;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert!(pauses >= 2, "too few pauses to mean anything: {pauses}");

    fleet.wait_completed(run, Duration::from_secs(300)).await;
    fleet.stop_agents().await;
    fleet.wait_ingested(Duration::from_secs(30)).await;

    let report = check(&fleet.db.pool, run.0).await;
    let fenced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_events WHERE run_id = $1 AND kind = 'lease_abandoned'",
    )
    .bind(run.0)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    let late = zombie_writes(&fleet.db.pool, run.0).await;
    println!(
        "zombie: pauses={pauses} leases_abandoned={fenced} late_writes={} {}",
        late.len(),
        report.line()
    );
    assert!(
        late.is_empty(),
        "scripts started after their lease was lost (task, epoch, started_ms, lost_ms): {late:?}"
    );
    assert_eq!(report.lost, 0, "{}", report.line());
    assert_eq!(report.duplicated, 0, "{}", report.line());
    assert_eq!(report.stale_accepted, 0, "{}", report.line());
    fleet.shutdown().await;
}
