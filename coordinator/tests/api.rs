//! The HTTP API in-process on port 0, against the real stores.

mod common;

use common::TestEnv;
use fleet_common::api::{AgentConfig, AgentInfo, ApiError, RunStatus, SubmitRunResponse};
use fleet_coordinator::{api, reconcile, Metrics};
use serde_json::json;

async fn start(env: &TestEnv, metrics: &Metrics) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api::router(env.state(metrics.clone()));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn error_of(resp: reqwest::Response) -> String {
    resp.json::<ApiError>()
        .await
        .expect("errors are ApiError JSON")
        .error
}

#[tokio::test]
async fn runs_are_submitted_with_the_api_token_and_read_without() {
    let env = TestEnv::new().await;
    reconcile::reconcile(&env.pool, &env.leases).await.unwrap();
    let metrics = Metrics::new();
    let base = start(&env, &metrics).await;
    let http = reqwest::Client::new();
    let runs = format!("{base}/api/v1/runs");
    let body = json!({ "skill_pack": "demo", "rules": ["sshd_a", "sshd_b"] });

    let r = http.post(&runs).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(error_of(r).await.contains("Authorization: Bearer"));
    let r = http
        .post(&runs)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = http
        .post(&runs)
        .bearer_auth("api-token")
        .header("content-type", "application/json")
        .body("{\"skill_pack\": \"demo\", \"rules\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await.contains("parse"));
    let r = http
        .post(&runs)
        .bearer_auth("api-token")
        .json(&json!({ "skill_pack": "demo", "rules": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await.contains("rules"));
    let r = http
        .post(&runs)
        .bearer_auth("api-token")
        .json(&json!({ "skill_pack": "demo", "rules": [], "oops": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await.contains("oops"));
    let r = http
        .post(&runs)
        .bearer_auth("api-token")
        .json(&json!({ "skill_pack": "nope", "rules": ["a"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(error_of(r).await.contains("known skill packs: demo"));

    let r = http
        .post(&runs)
        .bearer_auth("api-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: SubmitRunResponse = r.json().await.unwrap();
    assert_eq!(created.tasks, 2);
    assert_eq!(metrics.runs_submitted.get(), 1);

    let status: RunStatus = http
        .get(format!("{runs}/{}", created.run))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (status.total, status.finished, status.status.as_str()),
        (2, 0, "running")
    );
    assert_eq!(status.profile, "standard");
    let r = http.get(format!("{runs}/999999")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(error_of(r).await.contains("not found"));
    let r = http.get(format!("{runs}/abc")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    error_of(r).await;

    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "ok".to_string())
    );
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("fleet_runs_submitted_total 1"), "{text}");
    env.cleanup().await;
}

#[tokio::test]
async fn agents_register_with_the_agent_token_and_learn_where_redis_is() {
    let env = TestEnv::new().await;
    let metrics = Metrics::new();
    let base = start(&env, &metrics).await;
    let http = reqwest::Client::new();
    let register = format!("{base}/api/v1/agents/register");
    let body = json!({ "agent": "agent-7", "host": "h1", "version": "0.1.0" });

    let r = http
        .post(&register)
        .bearer_auth("api-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the api token is not the agent token");
    let r = http
        .post(&register)
        .bearer_auth("agent-token")
        .json(&json!({ "agent": "../x", "host": "h", "version": "v" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let config: AgentConfig = http
        .post(&register)
        .bearer_auth("agent-token")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config.key_prefix, env.leases.keys().prefix());
    assert_eq!(config.lease, *env.leases.settings());
    env.leases
        .touch_agent(&fleet_common::AgentId("agent-7".into()))
        .await
        .unwrap();

    let agents: Vec<AgentInfo> = http
        .get(format!("{base}/api/v1/agents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].agent.as_str(), "agent-7");
    assert_eq!(agents[0].host, "h1");
    assert!(agents[0].alive);
    assert!(agents[0].last_seen_ms.is_some());
    env.cleanup().await;
}

/// Each registration is a new incarnation, numbered in Postgres: a Redis
/// that lost its counters (it came back empty) never hands a number out
/// twice, so two processes of one agent never share an event sequence.
#[tokio::test]
async fn incarnations_keep_counting_when_redis_forgets() {
    let env = TestEnv::new().await;
    let metrics = Metrics::new();
    let base = start(&env, &metrics).await;
    let http = reqwest::Client::new();
    let register = || async {
        let config: AgentConfig = http
            .post(format!("{base}/api/v1/agents/register"))
            .bearer_auth("agent-token")
            .json(&json!({ "agent": "agent-9", "host": "h", "version": "v" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        config
            .incarnation
            .expect("the coordinator numbers incarnations")
    };
    assert_eq!(register().await, 1);
    assert_eq!(register().await, 2);
    // Redis loses the counter, as when it restarts empty.
    let mut conn = env.leases.connection();
    let _: () = redis::AsyncCommands::del(
        &mut conn,
        env.leases
            .keys()
            .incarnation(&fleet_common::AgentId("agent-9".into())),
    )
    .await
    .unwrap();
    assert_eq!(register().await, 3);
    env.cleanup().await;
}
