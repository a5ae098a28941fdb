//! K1: concurrent `update_main` calls (threads and processes) all land, and
//! `main`'s first-parent history has only fast-forward steps.

mod common;

use std::path::Path;

use common::{git_ok, is_child, spawn_child};
use fleet_knowledge::{init_bare, tree_with_file, update_main, MAIN_REF};

fn add_file(bare: &Path, name: &str) -> git2::Oid {
    let repo = git2::Repository::open_bare(bare).unwrap();
    update_main(
        &repo,
        |repo, tip| {
            let base = match tip {
                Some(c) => Some(c.tree()?),
                None => None,
            };
            tree_with_file(
                repo,
                base.as_ref(),
                &format!("lessons/test/{name}.md"),
                name.as_bytes(),
                false,
            )
        },
        &format!("add {name}"),
    )
    .unwrap()
}

/// Each thread adds `per_thread` files; returns nothing, panics on error.
fn hammer(bare: &Path, tag: &str, threads: usize, per_thread: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..per_thread {
                    add_file(bare, &format!("{tag}-t{t}-{i}"));
                }
            });
        }
    });
}

/// Child process entry: hammer the repo given in the environment.
#[test]
fn child_entry() {
    if !is_child() {
        return;
    }
    let bare = std::env::var("BARE").unwrap();
    let tag = std::env::var("TAG").unwrap();
    hammer(Path::new(&bare), &tag, 2, 15);
}

fn assert_fast_forward_only(bare: &Path, expected_files: &[String]) {
    // Every commit reachable is on the first-parent chain: history is linear.
    let first_parent = git_ok(bare, &["rev-list", "--first-parent", "--parents", "main"]);
    let all = git_ok(bare, &["rev-list", "main"]);
    let lines: Vec<Vec<&str>> = first_parent
        .lines()
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(
        lines.len(),
        all.lines().count(),
        "a merge or a side branch reached main"
    );
    // Each commit has exactly one parent, the previous main (the root has none).
    for w in lines.windows(2) {
        assert_eq!(
            w[0].len(),
            2,
            "commit {} is not a single-parent step",
            w[0][0]
        );
        assert_eq!(w[0][1], w[1][0]);
    }
    assert_eq!(lines.last().unwrap().len(), 1);
    assert_eq!(
        lines.len(),
        expected_files.len() + 1,
        "one commit per update plus the initial one"
    );
    let tree = git_ok(
        bare,
        &["ls-tree", "-r", "--name-only", "main", "lessons/test/"],
    );
    let mut have: Vec<&str> = tree.lines().collect();
    have.sort();
    let mut want: Vec<String> = expected_files
        .iter()
        .map(|f| format!("lessons/test/{f}.md"))
        .collect();
    want.sort();
    assert_eq!(have, want, "a commit was lost");
}

fn names(tag: &str, threads: usize, per_thread: usize) -> Vec<String> {
    (0..threads)
        .flat_map(|t| (0..per_thread).map(move |i| format!("{tag}-t{t}-{i}")))
        .collect()
}

#[test]
fn concurrent_updates_from_threads_all_land_fast_forward_only() {
    if is_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("k.git");
    init_bare(&bare, &dir.path().join("no-packs")).unwrap();
    hammer(&bare, "x", 2, 25);
    assert_fast_forward_only(&bare, &names("x", 2, 25));
}

#[test]
fn concurrent_updates_from_processes_all_land_fast_forward_only() {
    if is_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("k.git");
    init_bare(&bare, &dir.path().join("no-packs")).unwrap();
    let children: Vec<_> = ["p0", "p1", "p2"]
        .iter()
        .map(|tag| {
            spawn_child(
                "child_entry",
                &[
                    ("BARE", bare.display().to_string()),
                    ("TAG", tag.to_string()),
                ],
            )
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "child failed");
    }
    let mut want = names("p0", 2, 15);
    want.extend(names("p1", 2, 15));
    want.extend(names("p2", 2, 15));
    assert_fast_forward_only(&bare, &want);
}

#[test]
fn init_is_idempotent_and_installs_the_receive_guards() {
    if is_child() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    std::fs::create_dir_all(packs.join("demo/rules")).unwrap();
    std::fs::write(packs.join("demo/pack.toml"), "x = 1\n").unwrap();
    std::fs::write(packs.join("demo/rules/a.txt"), "a\n").unwrap();
    let bare = dir.path().join("k.git");
    let first = init_bare(&bare, &packs)
        .unwrap()
        .refname_to_id(MAIN_REF)
        .unwrap();
    add_file(&bare, "later");
    let repo = init_bare(&bare, &packs).unwrap();
    let after = repo.refname_to_id(MAIN_REF).unwrap();
    assert_ne!(first, after, "a second init must not reset main");
    let files = git_ok(&bare, &["ls-tree", "-r", "--name-only", &first.to_string()]);
    assert_eq!(
        files,
        "packs/demo/pack.toml\npacks/demo/rules/a.txt\nranking.json\n"
    );
    for (key, want) in [
        ("receive.denyNonFastForwards", "true"),
        ("receive.denyDeletes", "true"),
        ("http.receivepack", "true"),
    ] {
        assert_eq!(git_ok(&bare, &["config", key]).trim(), want, "{key}");
    }
    let mode = std::fs::metadata(bare.join("hooks/pre-receive"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "hook must be executable");
    assert_eq!(git_ok(&bare, &["symbolic-ref", "HEAD"]).trim(), MAIN_REF);
}

#[test]
fn a_main_that_moves_during_the_build_is_rebuilt_on_not_overwritten() {
    if is_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("k.git");
    init_bare(&bare, &dir.path().join("no-packs")).unwrap();
    let repo = git2::Repository::open_bare(&bare).unwrap();
    let calls = std::cell::Cell::new(0);
    let interloper = std::cell::Cell::new(None);
    let ours = update_main(
        &repo,
        |repo, tip| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                // Another writer moves main between our read and our CAS.
                interloper.set(Some(add_file(&bare, "interloper")));
            }
            let base = tip.map(|c| c.tree()).transpose()?;
            tree_with_file(repo, base.as_ref(), "lessons/test/ours.md", b"ours", false)
        },
        "ours",
    )
    .unwrap();
    assert_eq!(calls.get(), 2, "the build must rerun on the new main");
    let commit = repo.find_commit(ours).unwrap();
    assert_eq!(commit.parent_id(0).unwrap(), interloper.get().unwrap());
    assert_eq!(repo.refname_to_id(MAIN_REF).unwrap(), ours);
    assert_fast_forward_only(&bare, &["interloper".to_string(), "ours".to_string()]);
}
