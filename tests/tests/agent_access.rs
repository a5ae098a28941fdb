//! Issue 9, least privilege for agents: a fleet without a shared token,
//! each agent on its own token and its own Redis ACL user. The token is
//! good for its agent only; the Redis user cannot run administrative
//! commands or touch keys outside the fleet's prefix; revoking cuts
//! registration, the knowledge repo and Redis at once, and a new token
//! restores them.

use std::time::Duration;

use fleet_common::api::{AgentConfig, RegisterAgent};
use fleet_tests::fleet::{Fleet, FleetOpts};

async fn register(fleet: &Fleet, token: Option<&str>, agent: &str) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/v1/agents/register", fleet.api))
        .json(&RegisterAgent {
            agent: fleet_common::AgentId::parse(agent).unwrap(),
            host: "test".into(),
            version: "test".into(),
        });
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("coordinator reachable")
}

async fn redis(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// The error code Redis answered `args` with, or "OK" if it was allowed.
async fn answer(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query_async::<redis::Value>(conn).await {
        Ok(_) => "OK".into(),
        Err(e) => e.code().unwrap_or("io").to_owned(),
    }
}

/// `git ls-remote` of the knowledge repo as `agent` with `password`.
fn git_ls_remote(config: &AgentConfig, agent: &str, password: &str) -> bool {
    let base = config.knowledge_url.as_deref().expect("knowledge url");
    let url = base.replacen("http://", &format!("http://{agent}:{password}@"), 1);
    std::process::Command::new("git")
        .args(["ls-remote", &url, "refs/heads/main"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_their_own_tokens_are_confined_to_the_prefix_until_revoked() {
    let mut fleet = Fleet::start(FleetOpts {
        agents: 1,
        per_agent_tokens: true,
        auto_dream: false,
        ..Default::default()
    })
    .await;
    let agent = fleet.agent_id(0);
    let token = fleet.agent_tokens[0].clone().expect("token issued");
    assert!(token.starts_with("fleet_agent_"), "{token}");

    // An agent on its own token and Redis user does a run's work.
    let rules: Vec<String> = [
        "audit_rules_dac_modification_chmod",
        "audit_rules_dac_modification_chown",
        "audit_rules_dac_modification_fchmod",
    ]
    .map(String::from)
    .to_vec();
    let run = fleet.submit(rules.clone()).await;
    let status = fleet.wait_completed(run, Duration::from_secs(120)).await;
    assert_eq!(status.total as usize, rules.len());

    // The token is bound to its agent; without an enrollment token nothing
    // else registers.
    assert_eq!(
        register(&fleet, Some(&token), "agent-x").await.status(),
        403
    );
    assert_eq!(register(&fleet, None, &agent).await.status(), 401);
    assert_eq!(
        register(&fleet, Some(&fleet.agent_token), &agent)
            .await
            .status(),
        401,
        "the shared token was not configured, so it must not work"
    );
    assert_eq!(
        register(&fleet, Some("fleet_agent_00"), &agent)
            .await
            .status(),
        401
    );
    let resp = register(&fleet, Some(&token), &agent).await;
    assert_eq!(resp.status(), 200);
    let config: AgentConfig = resp.json().await.unwrap();
    assert!(
        config.redis_url.contains(&format!("-agent-{agent}:")),
        "agents get their own redis user"
    );

    // The Redis user: the fleet's keys yes, anything else or admin no.
    let prefix = fleet.keys.prefix().to_owned();
    let mut conn = redis(&config.redis_url).await.expect("agent's redis user");
    let own = format!("{prefix}probe");
    assert_eq!(answer(&mut conn, &["SET", &own, "1"]).await, "OK");
    assert_eq!(answer(&mut conn, &["GET", &own]).await, "OK");
    for denied in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["CONFIG", "GET", "*"],
        &["CONFIG", "SET", "appendonly", "no"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["SET", "elsewhere:key", "1"],
        &["GET", "elsewhere:key"],
        &["DEL", "elsewhere:key"],
        &["ACL", "LIST"],
        &["ACL", "SETUSER", "intruder", "on", "+@all"],
        &["SELECT", "1"],
        &["REPLICAOF", "NO", "ONE"],
        &["BGREWRITEAOF"],
        &["SCRIPT", "FLUSH"],
        &["FUNCTION", "FLUSH"],
        &["CLIENT", "KILL", "TYPE", "normal"],
        &["MONITOR"],
    ] {
        assert_eq!(
            answer(&mut conn, denied).await,
            "NOPERM",
            "{denied:?} must be refused to an agent"
        );
    }

    // Git with its password works until it is revoked.
    let password = config.git_password.clone().expect("git password");
    assert!(git_ls_remote(&config, &agent, &password));

    let (ok, out, err) = fleet.cli(&["agents", "revoke", &agent]);
    assert!(ok, "revoke failed: {err}");
    assert!(out.contains("1 token(s) revoked"), "{out}");
    assert!(out.contains("redis user deleted"), "{out}");

    // Revoked: its open connection is closed, it cannot log in again, nor
    // register (with its token) nor reach the knowledge repo.
    let after = answer(&mut conn, &["GET", &own]).await;
    assert_ne!(after, "OK", "the revoked user's connection still works");
    assert!(
        redis(&config.redis_url).await.is_err() || {
            let mut c = redis(&config.redis_url).await.unwrap();
            answer(&mut c, &["PING"]).await != "OK"
        }
    );
    assert_eq!(register(&fleet, Some(&token), &agent).await.status(), 401);
    assert!(!git_ls_remote(&config, &agent, &password));
    let metrics = reqwest::get(format!("{}/metrics", fleet.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("fleet_agent_credentials_total{action=\"revoked\"} 1"),
        "revocations are counted"
    );

    // A new token restores everything.
    let fresh = fleet.issue_agent_token(&agent);
    assert_ne!(fresh, token);
    let resp = register(&fleet, Some(&fresh), &agent).await;
    assert_eq!(resp.status(), 200);
    let config: AgentConfig = resp.json().await.unwrap();
    let mut conn = redis(&config.redis_url).await.expect("redis user back");
    assert_eq!(answer(&mut conn, &["GET", &own]).await, "OK");
    assert!(git_ls_remote(&config, &agent, &password));

    for slot in &mut fleet.agents {
        if let Some(agent) = slot.take() {
            agent.terminate(Duration::from_secs(10)).await;
        }
    }
}
