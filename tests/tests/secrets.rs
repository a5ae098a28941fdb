//! No secret in logs or events (issue 9): a real fleet — the coordinator
//! binary and two agent binaries, logging JSON at `debug` — runs a run with
//! its API token, the agents' own tokens, the git secret (and the agents'
//! git passwords and Redis ACL passwords derived from it) and an LLM API
//! key in their environment; then every log line and every stored event is
//! searched for each of them.

use std::time::Duration;

use fleet_tests::fleet::{Fleet, FleetOpts};

/// The password of agent i's Redis ACL user, as registration hands it out.
async fn redis_password(fleet: &Fleet, i: usize, token: &str) -> String {
    let config: fleet_common::api::AgentConfig = reqwest::Client::new()
        .post(format!("{}/api/v1/agents/register", fleet.api))
        .bearer_auth(token)
        .json(&fleet_common::api::RegisterAgent {
            agent: fleet_common::AgentId::parse(&fleet.agent_id(i)).unwrap(),
            host: "secrets-test".into(),
            version: "test".into(),
        })
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let creds = config.redis_url.split("://").nth(1).unwrap();
    let (creds, _host) = creds
        .rsplit_once('@')
        .expect("credentials in the redis url");
    let password = creds.split_once(':').unwrap().1.to_owned();
    assert!(password.len() >= 32, "a real password: {password}");
    password
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_line_or_an_event() {
    let llm_key = format!("sk-{}", uuid::Uuid::new_v4().simple());
    // The agents inherit this; the sim brain does not call the endpoint,
    // but the key is parsed and held like in production.
    std::env::set_var("FLEET_LLM_API_KEY", &llm_key);
    std::env::set_var(
        "RUST_LOG",
        "debug,hyper=info,h2=info,sqlx=warn,reqwest=info",
    );
    let mut fleet = Fleet::start(FleetOpts {
        json_logs: true,
        per_agent_tokens: true,
        ..Default::default()
    })
    .await;
    let rules: Vec<String> = (0..20).map(|i| format!("sshd_secret_probe_{i}")).collect();
    let run = fleet.submit(rules).await;
    fleet.wait_completed(run, Duration::from_secs(120)).await;
    fleet.stop_agents().await;

    let mut secrets = vec![
        ("api token", fleet.api_token.clone()),
        ("git secret", fleet.git_secret.clone()),
        ("llm api key", llm_key),
    ];
    for i in 0..fleet.opts.agents {
        let password =
            fleet_knowledge::agent_git_password(fleet.git_secret.as_bytes(), &fleet.agent_id(i));
        secrets.push(("an agent's git password", password));
        let token = fleet.agent_tokens[i].clone().expect("per-agent token");
        secrets.push((
            "an agent's redis password",
            redis_password(&fleet, i, &token).await,
        ));
        secrets.push(("an agent's token", token));
    }

    let mut lines = 0;
    for entry in std::fs::read_dir(&fleet.logs).unwrap().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        lines += text.lines().count();
        for (what, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the {what} is in {}",
                path.display()
            );
        }
    }
    assert!(lines > 100, "only {lines} log lines: is debug logging on?");

    let events: Vec<String> =
        sqlx::query_scalar("SELECT body::text FROM run_events WHERE run_id = $1")
            .bind(run.0)
            .fetch_all(&fleet.db.pool)
            .await
            .unwrap();
    assert!(events.len() > 20, "{} events", events.len());
    for body in &events {
        for (what, secret) in &secrets {
            assert!(
                !body.contains(secret.as_str()),
                "the {what} is in an event: {body}"
            );
        }
    }
    fleet.shutdown().await;
}
