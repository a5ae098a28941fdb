//! Multi-host chaos in the regular suite (the short plan; `make
//! chaos-hosts` runs the long one): agents in containers on a private
//! network; kills, pauses, a partition, Redis restarted with and without its
//! data, Postgres and the coordinator restarted, a target container killed.
//! Afterwards the checker finds every task with exactly one accepted
//! outcome, no event lost or applied twice, no stale completion or zombie
//! write, no leftovers, and `main` moved only by fast-forward.

use fleet_tests::hosts::{run, HostsPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_their_own_hosts_survive_every_fault() {
    let plan = HostsPlan::short();
    let report = run(plan.clone()).await;
    println!("{}", report.line());
    for b in report.verdict.branches_missing.iter().take(10) {
        println!("missing branch: {b}");
    }
    let line = report.line();
    // Every fault of the plan happened: a run that drained before its
    // faults proves nothing.
    assert!(report.kills >= 5, "{line}");
    assert_eq!(report.pauses as usize, plan.pauses, "{line}");
    assert_eq!(report.partitions as usize, plan.partitions, "{line}");
    assert_eq!(
        report.redis_restarts as usize, plan.redis_restarts,
        "{line}"
    );
    assert_eq!(report.pg_restarts as usize, plan.pg_restarts, "{line}");
    assert_eq!(
        report.coordinator_restarts as usize, plan.coordinator_restarts,
        "{line}"
    );
    assert_eq!(report.target_kills as usize, plan.target_kills, "{line}");
    assert!(report.sim_runs >= 1, "{line}");
    assert_eq!(
        report.verdict.tasks as usize,
        report.sim_runs * plan.tasks + plan.target_rules.len(),
        "{line}"
    );
    assert!(report.verdict.lease_losses > 0, "{line}");
    assert!(report.verdict.stale_rejected > 0, "{line}");
    assert_eq!(report.verdict.lost, 0, "{line}");
    assert_eq!(report.verdict.duplicated, 0, "{line}");
    assert_eq!(report.verdict.stale_accepted, 0, "{line}");
    assert_eq!(report.verdict.zombie_writes, 0, "{line}");
    assert_eq!(report.verdict.redis_leftovers, 0, "{line}");
    assert!(report.verdict.branches_checked > 0, "{line}");
    assert!(
        report.verdict.branches_missing.is_empty(),
        "accepted outcomes without their branch: {:?}",
        report.verdict.branches_missing
    );
    assert!(report.main_ff_only, "{line}");
    assert!(report.main_tips > 2, "{line}");
    assert!(
        report.leftover_worktrees.is_empty() && report.leftover_containers.is_empty(),
        "leftovers: {:?} {:?}",
        report.leftover_worktrees,
        report.leftover_containers
    );
    assert!(!report.recovery_ms.is_empty(), "{line}");
}

/// The history check must see a breach: a tip that is not a descendant of
/// the one before (main rewritten) and a merge entering main both fail it.
#[test]
fn main_history_check_catches_rewrites_and_merges() {
    use fleet_tests::hosts::check::main_fast_forward_only;
    use std::process::Command;

    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| -> String {
        let out = Command::new("git")
            .current_dir(dir.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    let commit = |msg: &str| {
        git(&["commit", "-q", "--allow-empty", "-m", msg]);
        git(&["rev-parse", "HEAD"])
    };
    let a = commit("a");
    let b = commit("b");
    git(&["checkout", "-q", "-b", "side", &a]);
    let side = commit("side");
    git(&["checkout", "-q", "main"]);
    git(&["merge", "-q", "--no-ff", "-m", "merge", "side"]);
    let merged = git(&["rev-parse", "HEAD"]);
    let repo = dir.path().join(".git");

    assert!(main_fast_forward_only(
        &repo,
        &[a.clone(), a.clone(), b.clone()]
    ));
    assert!(
        !main_fast_forward_only(&repo, &[a.clone(), b.clone(), side]),
        "rewrite"
    );
    assert!(!main_fast_forward_only(&repo, &[b, merged]), "merge");
}
