//! K3 under load: several agent processes share one cache and run many
//! leases each (fetch, worktree add, write, commit, push, remove) against
//! the HTTP transport: no lock error, no lost branch, no leftover worktree.
//!
//! The default size is the issue's: 8 processes x 50 leases;
//! `FLEET_KNOWLEDGE_CHURN=<processes>x<leases>` overrides it.

mod common;

use std::io::BufRead;

use common::{creds, is_child, leftover_worktrees, spawn_child, Server};
use fleet_knowledge::layout::skill_path;
use fleet_knowledge::{AgentCheckout, LessonFile, LessonKind, Provenance};

/// How many commits the coordinator adds to main during the run.
const MAX_MAIN_UPDATES: usize = 150;

fn size() -> (usize, usize) {
    let s = std::env::var("FLEET_KNOWLEDGE_CHURN").unwrap_or_else(|_| "8x50".into());
    let (p, l) = s.split_once('x').expect("<processes>x<leases>");
    (p.parse().unwrap(), l.parse().unwrap())
}

/// Child process: one agent running `LEASES` leases; prints `BRANCH <ref> <oid>`.
#[test]
fn child_agent() {
    if !is_child() {
        return;
    }
    let agent = std::env::var("AGENT").unwrap();
    let url = std::env::var("URL").unwrap();
    let cache = std::env::var("CACHE").unwrap();
    let leases: usize = std::env::var("LEASES").unwrap().parse().unwrap();
    let checkout = AgentCheckout::open_or_clone(cache.as_ref(), &url, creds(&agent)).unwrap();
    checkout.cleanup_leftovers().unwrap();
    for i in 0..leases {
        let t0 = std::time::Instant::now();
        checkout.fetch_main().unwrap();
        let t_fetch = t0.elapsed();
        let rule = format!("rule_{}", i % 5);
        let lease = checkout.start_lease("run-churn", &rule, i as u64).unwrap();
        let lesson = LessonFile {
            id: format!("{agent}-{i}"),
            kind: LessonKind::Lesson,
            pattern: None,
            family: "churn".into(),
            scope: "churn".into(),
            provenance: Provenance {
                run: "run-churn".into(),
                attempt: 1,
                agent: agent.clone(),
                source_commit: None,
                merged: Vec::new(),
            },
            body: format!("lesson {i}\n"),
        };
        lease
            .write(&lesson.path().unwrap(), lesson.render().as_bytes())
            .unwrap();
        lease
            .write(
                &skill_path(&rule).unwrap(),
                format!("#!/bin/sh\necho {i}\n").as_bytes(),
            )
            .unwrap();
        let t_add = t0.elapsed();
        let oid = lease.commit("churn").unwrap();
        let t_commit = t0.elapsed();
        lease.push().unwrap();
        let t_push = t0.elapsed();
        println!("BRANCH refs/heads/{} {oid}", lease.branch());
        lease.remove().unwrap();
        if std::env::var_os("CHURN_TIMING").is_some() {
            eprintln!("timing fetch={t_fetch:?} add={t_add:?} commit={t_commit:?} push={t_push:?} remove={:?}", t0.elapsed());
        }
    }
}

#[test]
fn agents_in_many_processes_share_one_cache_without_losing_anything() {
    if is_child() {
        return;
    }
    let (processes, leases) = size();
    let server = Server::start();
    let cache = server.dir.path().join("shared-cache");
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|p| {
            spawn_child(
                "child_agent",
                &[
                    ("AGENT", format!("agent-{p}")),
                    ("URL", server.url.clone()),
                    ("CACHE", cache.display().to_string()),
                    ("LEASES", leases.to_string()),
                ],
            )
        })
        .collect();
    // Meanwhile the coordinator keeps moving main (K1 under agent traffic).
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut pushed = Vec::new();
    let main_updates = std::thread::scope(|s| {
        let updater = s.spawn(|| {
            let repo = git2::Repository::open_bare(&server.bare).unwrap();
            let mut n = 0;
            // Capped: every promoted file is checked out by every later lease.
            while !done.load(std::sync::atomic::Ordering::Relaxed) && n < MAX_MAIN_UPDATES {
                fleet_knowledge::update_main(
                    &repo,
                    |repo, tip| {
                        let base = tip.map(|c| c.tree()).transpose()?;
                        let path = format!("lessons/promoted/l{n}.md");
                        fleet_knowledge::tree_with_file(repo, base.as_ref(), &path, b"x", false)
                    },
                    "promote",
                )
                .unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            n
        });
        collect(children, &mut pushed);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        updater.join().unwrap()
    });
    let elapsed = started.elapsed();
    eprintln!(
        "churn: {processes} processes x {leases} leases in {:.1} s ({:.0} ms per lease per process), {main_updates} main updates meanwhile",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / leases as f64
    );
    assert_eq!(
        pushed.len(),
        processes * leases,
        "every lease reports its branch"
    );
    let bare = git2::Repository::open_bare(&server.bare).unwrap();
    for (r, oid) in &pushed {
        let have = bare
            .refname_to_id(r)
            .unwrap_or_else(|_| panic!("branch {r} lost"));
        assert_eq!(have.to_string(), *oid, "{r}");
    }
    assert_eq!(leftover_worktrees(&cache), (vec![], vec![]));
    let leases_dir: Vec<_> = std::fs::read_dir(cache.join("leases")).unwrap().collect();
    assert!(
        leases_dir.is_empty(),
        "lease directories left: {leases_dir:?}"
    );
    let local = common::git_ok(&cache.join("repo"), &["for-each-ref", "refs/heads/"]);
    assert_eq!(local, "", "local lease branches left");
    // main stayed linear: one first-parent step per update, nothing else reachable.
    let first_parent = common::git_ok(&server.bare, &["rev-list", "--first-parent", "main"]);
    let all = common::git_ok(&server.bare, &["rev-list", "main"]);
    assert_eq!(first_parent, all);
    assert_eq!(first_parent.lines().count(), main_updates + 1);
}

fn collect(children: Vec<std::process::Child>, pushed: &mut Vec<(String, String)>) {
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "an agent process failed");
        for line in out.stdout.lines() {
            let line = line.unwrap();
            // libtest prints "test child_agent ... " in front of the first line.
            if let Some(rest) = line.find("BRANCH ").map(|i| &line[i + 7..]) {
                let (r, oid) = rest.split_once(' ').unwrap();
                pushed.push((r.to_string(), oid.to_string()));
            }
        }
    }
}
