//! K3 after a crash: an agent SIGKILLed in the middle of committing (and
//! leases dropped without `remove`) leave worktrees behind;
//! `cleanup_leftovers` removes them on the next start and the next lease works.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{creds, is_child, leftover_worktrees, spawn_child, Server};
use fleet_knowledge::AgentCheckout;

/// Child process: start a lease, then commit in a loop until killed.
#[test]
fn child_committing_forever() {
    if !is_child() {
        return;
    }
    let agent = std::env::var("AGENT").unwrap();
    let checkout = AgentCheckout::open_or_clone(
        std::env::var("CACHE").unwrap().as_ref(),
        &std::env::var("URL").unwrap(),
        creds(&agent),
    )
    .unwrap();
    let removed = checkout.cleanup_leftovers().unwrap();
    checkout.fetch_main().unwrap();
    let epoch: u64 = std::env::var("EPOCH").unwrap().parse().unwrap();
    let lease = checkout.start_lease("run-crash", "rule_c", epoch).unwrap();
    println!("\nREADY removed={removed}");
    for i in 0.. {
        lease
            .write(&format!("attempts/{i}.sh"), &vec![b'x'; 4096])
            .unwrap();
        lease.commit(&format!("attempt {i}")).unwrap();
    }
}

fn run_and_kill(server: &Server, cache: &std::path::Path, epoch: u64, after: Duration) -> usize {
    let mut child = spawn_child(
        "child_committing_forever",
        &[
            ("AGENT", "crashy".to_string()),
            ("URL", server.url.clone()),
            ("CACHE", cache.display().to_string()),
            ("EPOCH", epoch.to_string()),
        ],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut removed = None;
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if let Some(n) = line.trim().strip_prefix("READY removed=") {
            removed = Some(n.parse().unwrap());
            break;
        }
        line.clear();
    }
    let removed = removed.expect("child never got its lease");
    std::thread::sleep(after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    removed
}

#[test]
fn a_killed_agent_leaves_worktrees_that_its_next_start_removes() {
    if is_child() {
        return;
    }
    let server = Server::start();
    let cache = server.dir.path().join("cache");
    // Three incarnations, each killed mid-commit; each start cleans the previous one's lease.
    assert_eq!(
        run_and_kill(&server, &cache, 1, Duration::from_millis(30)),
        0
    );
    assert_eq!(
        run_and_kill(&server, &cache, 2, Duration::from_millis(77)),
        1
    );
    assert_eq!(
        run_and_kill(&server, &cache, 3, Duration::from_millis(151)),
        1
    );
    let (listed, admin) = leftover_worktrees(&cache);
    assert_eq!(
        (listed.len(), admin.len()),
        (1, 1),
        "the last crash left its worktree"
    );

    // A fourth start, in this process: also leases dropped without remove.
    let checkout = AgentCheckout::open_or_clone(&cache, &server.url, creds("crashy")).unwrap();
    assert_eq!(checkout.cleanup_leftovers().unwrap(), 1);
    checkout.fetch_main().unwrap();
    drop(checkout.start_lease("run-crash", "rule_d", 1).unwrap());
    drop(checkout.start_lease("run-crash", "rule_d", 2).unwrap());
    // A kill in the middle of a ref update leaves git lock files behind.
    let git_dir = cache.join("repo/.git");
    std::fs::write(
        git_dir.join("refs/heads/agent/crashy/run-crash/rule_d-e1.lock"),
        "",
    )
    .unwrap();
    std::fs::write(git_dir.join("packed-refs.lock"), "").unwrap();
    // Another agent's worktree in the same cache is not ours to remove.
    let other = AgentCheckout::open_or_clone(&cache, &server.url, creds("bystander")).unwrap();
    let theirs = other.start_lease("run-crash", "rule_d", 1).unwrap();
    assert_eq!(checkout.cleanup_leftovers().unwrap(), 2);
    assert_eq!(
        other.worktree_names().unwrap(),
        vec!["bystander+run-crash+rule_d+e1".to_string()]
    );
    theirs.remove().unwrap();
    assert_eq!(leftover_worktrees(&cache), (vec![], vec![]));
    let local = common::git_ok(&cache.join("repo"), &["for-each-ref", "refs/heads/"]);
    assert_eq!(local, "", "leftover lease branches were not deleted");

    // The next lease works, even one reusing a crashed lease's epoch.
    checkout.fetch_main().unwrap();
    let lease = checkout.start_lease("run-crash", "rule_c", 3).unwrap();
    lease
        .write("skills/rule_c.sh", b"#!/bin/sh\ntrue\n")
        .unwrap();
    let oid = lease.commit("after the crash").unwrap();
    lease.push().unwrap();
    lease.remove().unwrap();
    let bare = git2::Repository::open_bare(&server.bare).unwrap();
    assert_eq!(
        bare.refname_to_id("refs/heads/agent/crashy/run-crash/rule_c-e3")
            .unwrap(),
        oid
    );
    assert_eq!(leftover_worktrees(&cache), (vec![], vec![]));
}
