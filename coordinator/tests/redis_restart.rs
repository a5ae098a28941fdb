//! A private Redis server restarted under the reaper, with and without its
//! data (DESIGN L1, L6): either way the queue is rebuilt and later grants
//! carry a higher epoch generation.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{submission, TestEnv};
use fleet_common::AgentId;
use fleet_coordinator::reaper::{Reaper, ReaperTick};
use fleet_coordinator::{planner, reconcile, Metrics};
use tokio::process::{Child, Command};

struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PrivateRedis {
    async fn start(port: u16, dir: &Path) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (run `make deps`)");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        let start = Instant::now();
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "private redis did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            port,
            dir: dir.to_owned(),
            child,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (optionally after a snapshot) and starts it again.
    async fn restart(mut self, keep_data: bool) -> Self {
        if keep_data {
            let client = redis::Client::open(self.url()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let _: String = redis::cmd("SAVE").query_async(&mut c).await.unwrap();
        }
        self.child.kill().await.unwrap();
        Self::start(self.port, &self.dir).await
    }
}

/// The reaper's first ticks after a restart may still see the old
/// connection fail; it retries every tick, so do the same here.
async fn tick_until_ok(reaper: &mut Reaper) -> ReaperTick {
    let start = Instant::now();
    loop {
        match reaper.tick().await {
            Ok(t) => return t,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(15),
                "reaper never recovered: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn restart_case(keep_data: bool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!(
        "coordinator-redis-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let redis = PrivateRedis::start(port, &dir).await;
    let env = TestEnv::with_redis(&redis.url(), Default::default()).await;
    let first = reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    planner::submit(
        &env.pool,
        &env.leases,
        &env.packs,
        submission(&["sshd_a", "sshd_b"]),
    )
    .await
    .unwrap();
    let agent = AgentId("agent-1".into());
    let before = env.leases.lease(&agent).await.unwrap().expect("a task");
    let metrics = Metrics::new();
    let mut reaper = Reaper::new(env.pool.clone(), env.leases.clone(), metrics.clone());
    assert!(!reaper.tick().await.unwrap().reconciled);

    let redis = redis.restart(keep_data).await;
    let tick = tick_until_ok(&mut reaper).await;
    assert!(
        tick.reconciled,
        "restart (keep_data={keep_data}) not noticed"
    );
    assert_eq!(metrics.reconciliations(), 1);
    let generation = env
        .leases
        .generation()
        .await
        .unwrap()
        .expect("generation installed");
    assert!(generation > first.generation);

    let after = env
        .leases
        .lease(&agent)
        .await
        .unwrap()
        .expect("a task after restart");
    assert_eq!(after.epoch.generation(), generation);
    assert!(after.epoch > before.epoch);
    if !keep_data {
        // Both tasks came back from Postgres, including the one that was leased.
        let again = env
            .leases
            .lease(&agent)
            .await
            .unwrap()
            .expect("second task");
        assert!([after.id(), again.id()].contains(&before.id()));
    }
    drop(redis);
    let _ = sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", env.schema))
        .execute(&env.pool)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_redis_restarted_with_its_data_gets_a_new_generation() {
    restart_case(true).await;
}

#[tokio::test]
async fn a_redis_restarted_empty_is_rebuilt() {
    restart_case(false).await;
}
