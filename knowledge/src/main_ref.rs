//! K1: `main` moves only forward, by compare-and-swap, with retries.

use std::time::Duration;

use git2::{Commit, ErrorCode, Oid, Repository, Signature};
use rand::Rng;

use crate::KnowledgeError;

/// The ref agents read and only the coordinator moves.
pub const MAIN_REF: &str = "refs/heads/main";

/// How many times [`update_main`] rebuilds before giving up.
pub const MAX_TRIES: u32 = 50;

/// The committer of every commit on `main`.
pub fn coordinator_signature() -> Result<Signature<'static>, KnowledgeError> {
    Ok(Signature::now(
        "fleet-coordinator",
        "coordinator@fleet.invalid",
    )?)
}

/// Build a commit on top of the current `main` and move `main` to it by
/// compare-and-swap. `build` gets the repository and the current tip (None
/// if `main` does not exist yet) and returns the tree of the new commit,
/// normally derived from the tip's tree. If `main` moved meanwhile, the
/// commit is rebuilt on the new tip (so `build` may run several times and
/// must not have other side effects); `main` is never moved to a commit
/// that does not descend from its previous value.
pub fn update_main<F>(repo: &Repository, build: F, message: &str) -> Result<Oid, KnowledgeError>
where
    F: Fn(&Repository, Option<&Commit>) -> Result<Oid, KnowledgeError>,
{
    let sig = coordinator_signature()?;
    for attempt in 1..=MAX_TRIES {
        let tip = match repo.find_reference(MAIN_REF) {
            Ok(r) => Some(r.peel_to_commit()?),
            Err(e) if e.code() == ErrorCode::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let tree_id = build(repo, tip.as_ref())?;
        let tree = repo.find_tree(tree_id)?;
        let parents: Vec<&Commit> = tip.iter().collect();
        // Write the commit object without touching any ref; the ref moves below.
        let commit = repo.commit(None, &sig, &sig, message, &tree, &parents)?;
        let log = format!("fleet: {message}");
        let moved = match &tip {
            Some(tip) => repo.reference_matching(MAIN_REF, commit, true, tip.id(), &log),
            None => repo.reference(MAIN_REF, commit, false, &log),
        };
        match moved {
            Ok(_) => {
                tracing::debug!(%commit, attempt, "main moved");
                return Ok(commit);
            }
            Err(e) if is_contention(&e) => {
                tracing::debug!(attempt, error = %e, "main moved meanwhile, rebuilding");
                let micros = rand::rng().random_range(100..2_000 * u64::from(attempt.min(10)));
                std::thread::sleep(Duration::from_micros(micros));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(KnowledgeError::MainContended { tries: MAX_TRIES })
}

/// Opens the bare repo at `dir` and commits `files` (slash-separated path,
/// contents) on top of its `main` with [`update_main`].
pub fn commit_files_on_main(
    dir: &std::path::Path,
    files: &[(&str, &[u8])],
    message: &str,
) -> Result<Oid, KnowledgeError> {
    let repo = Repository::open_bare(dir)?;
    update_main(
        &repo,
        |repo, tip| {
            let mut tree = tip.map(|c| c.tree()).transpose()?;
            for (path, bytes) in files {
                let id = tree_with_file(repo, tree.as_ref(), path, bytes, false)?;
                tree = Some(repo.find_tree(id)?);
            }
            match tree {
                Some(t) => Ok(t.id()),
                None => Err(KnowledgeError::BadRelativePath("".into())),
            }
        },
        message,
    )
}

/// The CAS lost (the ref changed or appeared), or another writer holds the ref's lock file.
fn is_contention(e: &git2::Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked
    ) || e.message().contains("old reference value does not match")
        || e.message().contains("failed to lock")
}

/// Copy `tree` (or an empty tree) with `path` (slash-separated) set to
/// `bytes`. A small helper for `build` closures.
pub fn tree_with_file(
    repo: &Repository,
    base: Option<&git2::Tree>,
    path: &str,
    bytes: &[u8],
    executable: bool,
) -> Result<Oid, KnowledgeError> {
    let blob = repo.blob(bytes)?;
    let mode = if executable { 0o100755 } else { 0o100644 };
    insert(repo, base, &path.split('/').collect::<Vec<_>>(), blob, mode)
}

fn insert(
    repo: &Repository,
    base: Option<&git2::Tree>,
    parts: &[&str],
    blob: Oid,
    mode: i32,
) -> Result<Oid, KnowledgeError> {
    let mut builder = repo.treebuilder(base)?;
    match parts {
        [] => Err(KnowledgeError::BadRelativePath("".into())),
        [name] => {
            builder.insert(name, blob, mode)?;
            Ok(builder.write()?)
        }
        [dir, rest @ ..] => {
            let sub = match base.and_then(|t| t.get_name(dir)) {
                Some(e) if e.kind() == Some(git2::ObjectType::Tree) => {
                    Some(repo.find_tree(e.id())?)
                }
                _ => None,
            };
            let sub_id = insert(repo, sub.as_ref(), rest, blob, mode)?;
            builder.insert(dir, sub_id, 0o040000)?;
            Ok(builder.write()?)
        }
    }
}
