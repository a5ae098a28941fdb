//! DESIGN L4 with K3: a lease lost mid-work removes its worktree without
//! pushing, so the knowledge repo holds a branch only for the grant whose
//! outcome was accepted, and the agent's cache keeps no worktree.

mod support;

use std::time::Duration;

use fleet_agent::events::EventSink;
use fleet_agent::knowledge::Knowledge;
use fleet_agent::metrics::AgentMetrics;
use fleet_agent::runner::Runner;
use fleet_agent::sim::SimBehaviour;
use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Budgets, TaskId};
use fleet_knowledge::{agent_git_password, init_bare, router, AgentCredentials, GitHttpState};
use redis::AsyncCommands;
use support::{enqueue, fresh_client, rule_task, rule_with, task_field};
use tokio_util::sync::CancellationToken;

const SECRET: &[u8] = b"lost-lease-secret";

/// A bare knowledge repo served over smart HTTP on an ephemeral port.
async fn knowledge_server(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let packs = dir.join("skill-packs");
    std::fs::create_dir_all(packs.join("demo")).unwrap();
    std::fs::write(packs.join("demo/pack.toml"), "name = \"demo\"\n").unwrap();
    let bare = dir.join("knowledge.git");
    init_bare(&bare, &packs).unwrap();
    let app = axum::Router::new().nest(
        "/git",
        router(GitHttpState::new(&bare, SECRET.to_vec()).unwrap()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/git/knowledge.git",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (bare, url)
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn wait_leased(client: &LeaseClient, task: TaskId) {
    for _ in 0..200 {
        if task_field(client, task, "state").await.as_deref() == Some("leased") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("task {task} never leased");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_pushes_nothing_and_leaves_no_worktree() {
    let client = fresh_client(LeaseSettings::default()).await;
    let task = rule_task(
        1,
        &rule_with(SimBehaviour::FixedOnAttempt(3)),
        Budgets::default(),
    );
    enqueue(&client, std::slice::from_ref(&task)).await;

    let dir = std::env::temp_dir().join(format!("fleet-lost-{}", uuid::Uuid::new_v4().simple()));
    let (bare, url) = knowledge_server(&dir).await;
    let agent = AgentId::parse("agent-lost-git").unwrap();
    let cache = dir.join("cache");
    let knowledge = Knowledge::open(
        cache.clone(),
        url,
        AgentCredentials {
            agent_id: agent.as_str().to_owned(),
            token: agent_git_password(SECRET, agent.as_str()),
        },
    )
    .await
    .unwrap();
    let metrics = AgentMetrics::new();
    let incarnation = client.next_incarnation(&agent).await.unwrap();
    let sink = EventSink::start(client.clone(), agent.clone(), incarnation, metrics.clone());
    let runner = Runner::new(
        client.clone(),
        sink.clone(),
        metrics.clone(),
        Some(1),
        CancellationToken::new(),
    )
    .with_knowledge(Some(knowledge))
    .run(vec![fleet_agent::sim::workbench(Duration::from_millis(
        300,
    ))]);
    let runner = tokio::spawn(runner);

    wait_leased(&client, task.task).await;
    let lost_epoch = task_field(&client, task.task, "epoch").await.unwrap();
    // Redis now considers the lease expired: the next renewal is refused.
    let _: () = client
        .connection()
        .hset(client.keys().task(task.task), "deadline", 0)
        .await
        .unwrap();

    let summary = tokio::time::timeout(Duration::from_secs(60), runner)
        .await
        .expect("the agent completes the task under a new grant")
        .unwrap();
    sink.close(Duration::from_secs(5)).await;
    assert_eq!(summary.completed, 1);
    let accepted_epoch = task_field(&client, task.task, "epoch").await.unwrap();
    assert_ne!(accepted_epoch, lost_epoch);
    assert_eq!(metrics.knowledge_errors.get(), 0);

    let branches = git(
        &bare,
        &["for-each-ref", "--format=%(refname)", "refs/heads/agent/"],
    );
    let branches: Vec<&str> = branches.lines().collect();
    assert_eq!(
        branches.len(),
        1,
        "only the accepted grant's branch: {branches:?}"
    );
    assert!(
        branches[0].ends_with(&format!("-e{accepted_epoch}")),
        "{branches:?}"
    );
    let worktrees = git(&cache.join("repo"), &["worktree", "list", "--porcelain"]);
    assert_eq!(
        worktrees
            .lines()
            .filter(|l| l.starts_with("worktree "))
            .count(),
        1,
        "only the cache's main worktree is left: {worktrees}"
    );
    let _ = std::fs::remove_dir_all(dir);
    support::cleanup(&client).await;
}
