//! The real `fleet-coordinator` binary: `serve` starts on its own schema and
//! key prefix, answers `/healthz`, serves the CLI, and exits 0 on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{database_url, redis_url};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-coordinator");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn packs_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coordinator-bin-packs-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(dir.join("demo")).unwrap();
    std::fs::write(dir.join("demo/pack.toml"), common::PACK).unwrap();
    dir
}

#[tokio::test]
async fn serve_answers_health_serves_the_cli_and_exits_cleanly_on_sigterm() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let packs = packs_dir();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--lease-loss-budget")
        .arg("3")
        .env("FLEET_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEET_DATABASE_URL", database_url())
        .env("FLEET_PG_SCHEMA", format!("t_{id}"))
        .env("FLEET_REDIS_URL", redis_url())
        .env("FLEET_KEY_PREFIX", format!("t-{id}:"))
        .env("FLEET_API_TOKEN", "api-secret-1")
        .env("FLEET_AGENT_TOKEN", "agent-secret-2")
        .env("FLEET_SKILL_PACKS", &packs)
        .env("FLEET_GIT_SECRET", "git-secret-3")
        .env("FLEET_KNOWLEDGE_DIR", packs.join("knowledge.git"))
        .env("FLEET_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("coordinator binary starts");

    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{api}/healthz")).send().await {
            if r.status().is_success() {
                assert_eq!(r.text().await.unwrap(), "ok");
                break;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("coordinator exited early with {status}: is postgres/redis up? run `make deps`");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "coordinator not healthy after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The CLI against it: submit prints only the id with --quiet.
    let out = Command::new(BIN)
        .args([
            "submit",
            "--api",
            &api,
            "--skill-pack",
            "demo",
            "--rule",
            "sshd_a",
            "--rule",
            "sshd_b",
            "--quiet",
        ])
        .env("FLEET_API_TOKEN", "api-secret-1")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(run.parse::<i64>().is_ok(), "submit printed {run:?}");

    let out = Command::new(BIN)
        .args(["status", &run, "--api", &api, "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let status: fleet_common::api::RunStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status.total, 2);

    // A refused request: the server's message and exit status 2.
    let out = Command::new(BIN)
        .args([
            "submit",
            "--api",
            &api,
            "--skill-pack",
            "nope",
            "--rule",
            "a",
        ])
        .env("FLEET_API_TOKEN", "api-secret-1")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known skill packs: demo"));

    let agent: fleet_common::api::AgentConfig = http
        .post(format!("{api}/api/v1/agents/register"))
        .bearer_auth("agent-secret-2")
        .json(&serde_json::json!({ "agent": "agent-1", "host": "h", "version": "v" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        agent.lease.lease_loss_budget, 3,
        "the flag reached the agents' config"
    );
    assert_eq!(
        agent.knowledge_url.as_deref(),
        Some(format!("{api}/git/knowledge.git").as_str()),
        "--advertise-url defaults to http://<listen>"
    );
    let git_password = agent.git_password.clone().expect("a git password");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("coordinator exits within 15 s of SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "logs:\n{stderr}");
    assert!(stderr.contains("coordinator stopped"), "logs:\n{stderr}");
    for secret in [
        "api-secret-1",
        "agent-secret-2",
        "git-secret-3",
        git_password.as_str(),
        "fleet:fleet@",
    ] {
        assert!(!stderr.contains(secret), "{secret} leaked into the logs");
    }
    // JSON logs: every line parses.
    for line in stderr.lines().filter(|l| !l.is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not json ({e}): {line}"));
    }
    let _ = std::fs::remove_dir_all(packs);
    common::drop_fleet(&format!("t_{id}"), &format!("t-{id}:")).await;
}

#[tokio::test]
async fn a_missing_token_is_a_usage_error_that_says_how_to_fix_it() {
    let out = Command::new(BIN)
        .arg("serve")
        .env_remove("FLEET_API_TOKEN")
        .env("FLEET_AGENT_TOKEN", "x")
        .env("FLEET_DATABASE_URL", database_url())
        .env("FLEET_REDIS_URL", redis_url())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--api-token") && err.contains("FLEET_API_TOKEN"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_git_secret_is_a_usage_error_that_says_how_to_fix_it() {
    let out = Command::new(BIN)
        .arg("serve")
        .env("FLEET_API_TOKEN", "x")
        .env("FLEET_AGENT_TOKEN", "y")
        .env_remove("FLEET_GIT_SECRET")
        .env("FLEET_DATABASE_URL", database_url())
        .env("FLEET_REDIS_URL", redis_url())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--git-secret") && err.contains("FLEET_GIT_SECRET"),
        "{err}"
    );
}
