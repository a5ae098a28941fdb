//! `serve_on` in-process: startup reconciles, the ingester worker applies
//! events, and cancelling the token stops everything cleanly.

mod common;

use std::time::{Duration, Instant};

use common::{database_url, event, redis_url, TestEnv};
use fleet_common::api::SubmitRunResponse;
use fleet_common::{AgentId, EventBody};
use fleet_coordinator::serve::{serve_on, ServeConfig};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ingests_while_running_and_stops_when_cancelled() {
    let env = TestEnv::new().await;
    let mut config = ServeConfig::new(&database_url(), &redis_url(), "api-token", "agent-token");
    config.pg_schema = Some(env.schema.clone());
    config.key_prefix = env.leases.keys().prefix().to_owned();
    config.skill_packs = env.packs_dir.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_on(listener, config, shutdown.clone()));

    let http = reqwest::Client::new();
    let start = Instant::now();
    while http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not healthy after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        env.leases.generation().await.unwrap().is_some(),
        "startup reconciled redis"
    );

    let created: SubmitRunResponse = http
        .post(format!("{base}/api/v1/runs"))
        .bearer_auth("api-token")
        .json(&common::submission(&["sshd_a"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lease = env
        .leases
        .lease(&AgentId("agent-1".into()))
        .await
        .unwrap()
        .expect("queued");
    let body = EventBody::AttemptStarted;
    env.leases
        .append_event(&event(
            created.run,
            lease.id(),
            "sshd_a",
            lease.epoch,
            1,
            body,
        ))
        .await
        .unwrap();
    let start = Instant::now();
    while env.count("SELECT count(*) FROM attempts").await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "event not ingested by the running ingester"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(12), server)
        .await
        .expect("serve returns within the shutdown deadline")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "still accepting after shutdown"
    );
    env.cleanup().await;
}
