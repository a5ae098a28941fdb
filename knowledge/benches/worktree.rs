//! The issue's `bench worktree` figure: one lease (fetch + worktree add +
//! write + commit + push + remove) with this crate against the same steps
//! with the `git` CLI, same server, same run. Run by `make bench`, or
//! `cargo bench -p fleet-knowledge --bench worktree`
//! (`FLEET_KNOWLEDGE_BENCH_LEASES`, default 30).

// The module allows dead code itself (`#![allow(dead_code)]`).
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{creds, git_ok, Server};
use fleet_knowledge::AgentCheckout;

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("FLEET_KNOWLEDGE_BENCH_LEASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let server = Server::start();
    let script = b"#!/bin/sh\ntrue\n";

    let checkout =
        AgentCheckout::open_or_clone(&server.dir.path().join("ours"), &server.url, creds("ours"))
            .unwrap();
    let mut ours = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        checkout.fetch_main().unwrap();
        let lease = checkout.start_lease("bench", "rule", i as u64).unwrap();
        lease.write("skills/rule.sh", script).unwrap();
        lease.commit("bench").unwrap();
        lease.push().unwrap();
        lease.remove().unwrap();
        ours.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let cli_repo = server.dir.path().join("cli");
    std::fs::create_dir_all(&cli_repo).unwrap();
    git_ok(&cli_repo, &["init", "-q"]);
    let url = server
        .url
        .replace("http://", &format!("http://cli:{}@", creds("cli").token));
    let mut cli = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let branch = format!("agent/cli/bench/rule-e{i}");
        let wt = server.dir.path().join(format!("cli-wt-{i}"));
        let wt_s = wt.to_str().unwrap();
        git_ok(
            &cli_repo,
            &[
                "fetch",
                "-q",
                &url,
                "+refs/heads/main:refs/remotes/origin/main",
            ],
        );
        git_ok(
            &cli_repo,
            &[
                "worktree",
                "add",
                "-q",
                "--no-track",
                "-b",
                &branch,
                wt_s,
                "refs/remotes/origin/main",
            ],
        );
        std::fs::create_dir_all(wt.join("skills")).unwrap();
        std::fs::write(wt.join("skills/rule.sh"), script).unwrap();
        git_ok(&wt, &["add", "-A"]);
        git_ok(
            &wt,
            &[
                "-c",
                "user.name=cli",
                "-c",
                "user.email=cli@x",
                "commit",
                "-qm",
                "bench",
            ],
        );
        git_ok(
            &wt,
            &[
                "push",
                "-q",
                &url,
                &format!("refs/heads/{branch}:refs/heads/{branch}"),
            ],
        );
        git_ok(&cli_repo, &["worktree", "remove", "--force", wt_s]);
        git_ok(&cli_repo, &["branch", "-q", "-D", &branch]);
        cli.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (o, c) = (p50(ours), p50(cli));
    println!(
        "bench worktree: ours_ms_p50={o:.1} git_cli_ms_p50={c:.1} ratio={:.2}",
        o / c
    );
}
