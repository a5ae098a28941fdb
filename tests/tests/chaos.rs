//! Process-level chaos in the regular suite: coordinator + 8 agent processes,
//! 500 quick tasks, lease holders SIGKILLed and restarted, one agent paused
//! past its TTL. Afterwards every task has exactly one accepted outcome, no
//! event is lost and no stale completion was accepted.

use std::time::Duration;

use fleet_tests::chaos::{run, ChaosPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_killed_and_paused_mid_lease_lose_and_duplicate_nothing() {
    let report = run(ChaosPlan {
        tasks: 500,
        agents: 8,
        sim_work_ms: 25,
        kill_every: Duration::from_millis(300),
        pauses: 1,
        timeout: Duration::from_secs(300),
    })
    .await;
    println!("{}", report.line());
    assert_eq!(report.tasks, 500);
    assert!(report.kills >= 5, "too few kills to mean anything: {}", report.line());
    assert_eq!(report.pauses, 1);
    assert_eq!(report.lost, 0, "{}", report.line());
    assert_eq!(report.duplicated, 0, "{}", report.line());
    assert_eq!(report.stale_accepted, 0, "{}", report.line());
    assert_eq!(report.stale_rejected, report.stale_rejected_redis, "Postgres and Redis disagree on refused completions");
    assert!(!report.recovery_ms.is_empty(), "no killed lease was ever re-granted");
}
