//! Test harness: a bare knowledge repo served over smart HTTP on
//! 127.0.0.1:0 in-process, the real `git` CLI, and re-running this test
//! binary as a child process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fleet_knowledge::{agent_git_password, init_bare, router, AgentCredentials, GitHttpState};

pub const SECRET: &[u8] = b"test-agent-secret";

pub struct Server {
    pub dir: tempfile::TempDir,
    pub bare: PathBuf,
    pub url: String,
    pub port: u16,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let packs = dir.path().join("skill-packs");
        std::fs::create_dir_all(packs.join("demo")).unwrap();
        std::fs::write(packs.join("demo/pack.toml"), "name = \"demo\"\n").unwrap();
        let bare = dir.path().join("knowledge.git");
        init_bare(&bare, &packs).unwrap();
        let state = GitHttpState::new(&bare, SECRET.to_vec()).unwrap();
        let app = axum::Router::new().nest("/git", router(state));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move {
            use axum::serve::ListenerExt;
            let listener = tokio::net::TcpListener::from_std(listener)
                .unwrap()
                .tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
            axum::serve(listener, app).await.unwrap();
        });
        Server {
            url: format!("http://127.0.0.1:{port}/git/knowledge.git"),
            port,
            bare,
            dir,
            _rt: rt,
        }
    }

    pub fn refs(&self) -> Vec<(String, String)> {
        let repo = git2::Repository::open_bare(&self.bare).unwrap();
        let mut v: Vec<_> = repo
            .references()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.name().unwrap().to_string(),
                    r.target().map(|o| o.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

pub fn creds(agent: &str) -> AgentCredentials {
    AgentCredentials {
        agent_id: agent.to_string(),
        token: agent_git_password(SECRET, agent),
    }
}

/// Run the real git CLI; returns (success, stdout, stderr).
pub fn git(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = git(dir, args);
    assert!(ok, "git {args:?} failed: {err}");
    out
}

/// Start this test binary again, running only `test_name`, with `env`.
pub fn spawn_child(test_name: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env("FLEET_KNOWLEDGE_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

pub fn is_child() -> bool {
    std::env::var_os("FLEET_KNOWLEDGE_CHILD").is_some()
}

/// Worktrees other than the main one, as `git worktree list` sees them,
/// plus any admin entry left in `.git/worktrees`.
pub fn leftover_worktrees(cache: &Path) -> (Vec<String>, Vec<String>) {
    let repo = cache.join("repo");
    let list = git_ok(&repo, &["worktree", "list", "--porcelain"]);
    let extra: Vec<String> = list
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .filter(|p| Path::new(p) != repo.canonicalize().unwrap())
        .map(str::to_owned)
        .collect();
    let admin: Vec<String> = std::fs::read_dir(repo.join(".git/worktrees"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    (extra, admin)
}
