//! The `fleet-agent` binary itself: flags, SIGTERM → hand back and exit 0,
//! `--max-leases` → exit 0.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleet_agent::sim::SimBehaviour;
use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use fleet_common::Budgets;
use redis::AsyncCommands;
use support::{enqueue, fresh_client, rule_task, rule_with, task_field};
use tokio::time::Instant;

fn agent(client: &LeaseClient, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
        .args([
            "--id",
            "agent-bin",
            "--redis-url",
            &support::redis_url(),
            "--key-prefix",
            client.keys().prefix(),
        ])
        .args(extra)
        .env_remove("FLEET_COORDINATOR_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("fleet-agent starts")
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let give_up = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            panic!("fleet-agent did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_hands_the_lease_back_and_exits_zero() {
    let client = fresh_client(LeaseSettings::default()).await;
    let task = rule_task(
        1,
        &rule_with(SimBehaviour::NeverFixable),
        Budgets {
            max_attempts: 50,
            wall_time_s: 3600,
        },
    );
    enqueue(&client, std::slice::from_ref(&task)).await;
    let mut child = agent(&client, &["--sim-work-ms", "1000"]);

    let give_up = Instant::now() + Duration::from_secs(10);
    while task_field(&client, task.task, "state").await.as_deref() != Some("leased") {
        assert!(Instant::now() < give_up, "the agent never leased the task");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut child, Duration::from_secs(5)).await;
    assert_eq!(exit.code(), Some(0), "graceful shutdown exits 0");
    assert_eq!(
        task_field(&client, task.task, "state").await.as_deref(),
        Some("queued")
    );
    let ready: Option<f64> = client
        .connection()
        .zscore(client.keys().ready(), task.task.0)
        .await
        .unwrap();
    assert!(ready.is_some());
    support::cleanup(&client).await;
}

#[tokio::test]
async fn max_leases_exits_zero_once_reached() {
    let client = fresh_client(LeaseSettings::default()).await;
    let tasks: Vec<_> = (1..=3)
        .map(|i| rule_task(i, &format!("bin_rule_{i}"), Budgets::default()))
        .collect();
    enqueue(&client, &tasks).await;
    let mut child = agent(&client, &["--sim-work-ms", "2", "--max-leases", "3"]);
    let exit = wait_exit(&mut child, Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0));
    for t in &tasks {
        assert_eq!(
            task_field(&client, t.task, "state").await.as_deref(),
            Some("done")
        );
    }
    let agents: Vec<String> = client
        .connection()
        .zrange(client.keys().agents(), 0, -1)
        .await
        .unwrap();
    assert_eq!(agents, ["agent-bin"], "the agent was seen alive");
    support::cleanup(&client).await;
}

#[test]
fn a_bad_agent_id_is_refused_before_anything_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
        .args(["--id", "bad/id", "--redis-url", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be 1-64 characters"));
}
