//! `serve_on` in-process: startup reconciles, the ingester worker applies
//! events, and cancelling the token stops everything cleanly.

mod common;

use std::time::{Duration, Instant};

use common::{database_url, event, redis_url, TestEnv};
use fleet_common::api::{AgentConfig, SubmitRunResponse};
use fleet_common::{AgentId, EventBody};
use fleet_coordinator::serve::{serve_on, ServeConfig};
use tokio_util::sync::CancellationToken;

/// A fresh bare-repo path for this test's coordinator.
fn knowledge_dir(schema: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("fleet-knowledge-{schema}"))
        .join("knowledge.git")
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
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
}

/// K2 through the coordinator: registration answers where the knowledge
/// repo is and a password that the `/git/` route accepts for that agent
/// only; a wrong password or none is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_hands_out_the_knowledge_repo_and_a_git_password_that_works() {
    let env = TestEnv::new().await;
    let mut config = ServeConfig::new(&database_url(), &redis_url(), "api-token", "agent-token");
    config.pg_schema = Some(env.schema.clone());
    config.key_prefix = env.leases.keys().prefix().to_owned();
    config.skill_packs = env.packs_dir.clone();
    config.git_secret = "git-secret".into();
    config.knowledge_dir = knowledge_dir(&env.schema);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_on(listener, config.clone(), shutdown.clone()));
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    assert!(
        config.knowledge_dir.join("HEAD").is_file(),
        "bare repo created at startup"
    );

    let answer: AgentConfig = http
        .post(format!("{base}/api/v1/agents/register"))
        .bearer_auth("agent-token")
        .json(&serde_json::json!({"agent": "agent-7", "host": "h", "version": "v"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = answer
        .knowledge_url
        .clone()
        .expect("knowledge_url answered");
    assert_eq!(url, format!("{base}/git/knowledge.git"));
    let password = answer.git_password.clone().expect("git_password answered");
    assert_eq!(
        password,
        fleet_knowledge::agent_git_password(b"git-secret", "agent-7")
    );
    assert!(
        !format!("{answer:?}").contains(&password),
        "password redacted in Debug"
    );

    let refs = format!("{url}/info/refs?service=git-upload-pack");
    let ok = http
        .get(&refs)
        .basic_auth("agent-7", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the answered password authenticates");
    let body = ok.text().await.unwrap();
    assert!(body.contains("refs/heads/main"), "{body}");
    for (user, pw) in [
        ("agent-7", Some("wrong")),
        ("agent-8", Some(password.as_str())),
        ("agent-7", None),
    ] {
        let mut req = http.get(&refs);
        if let Some(pw) = pw {
            req = req.basic_auth(user, Some(pw));
        }
        let status = req.send().await.unwrap().status();
        assert_eq!(status, 401, "{user} with {pw:?} must be refused");
    }

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(12), server)
        .await
        .expect("serve returns within the shutdown deadline")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let _ = std::fs::remove_dir_all(config.knowledge_dir.parent().unwrap());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ingests_while_running_and_stops_when_cancelled() {
    let env = TestEnv::new().await;
    let mut config = ServeConfig::new(&database_url(), &redis_url(), "api-token", "agent-token");
    config.pg_schema = Some(env.schema.clone());
    config.key_prefix = env.leases.keys().prefix().to_owned();
    config.skill_packs = env.packs_dir.clone();
    config.git_secret = "git-secret".into();
    config.knowledge_dir = knowledge_dir(&env.schema);
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
