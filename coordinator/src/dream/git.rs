//! The dream stage's git work, off the async threads (git2 blocks).

use std::path::{Path, PathBuf};

use fleet_knowledge::{commit_changes, KnowledgeError, MainTree};

use crate::CoordinatorError;

pub(super) fn error(e: KnowledgeError) -> CoordinatorError {
    CoordinatorError::Knowledge(e)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KnowledgeError> + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoordinatorError::WorkerFailed(format!("git task: {e}")))?
        .map_err(error)
}

/// A snapshot of `main`.
pub(super) async fn open_main(dir: &Path) -> Result<MainTree, CoordinatorError> {
    let dir = dir.to_owned();
    blocking(move || MainTree::open(&dir)).await
}

/// Writes (`Some`) or deletes (`None`) one file on `main` as one
/// fast-forward commit; returns `main` before and after.
pub(super) async fn write(
    dir: &Path,
    path: String,
    bytes: Option<Vec<u8>>,
    message: String,
) -> Result<(Option<String>, String), CoordinatorError> {
    let dir: PathBuf = dir.to_owned();
    blocking(move || {
        let done = commit_changes(&dir, &[(path.as_str(), bytes.as_deref())], &message)?;
        Ok((done.before.map(|b| b.to_string()), done.after.to_string()))
    })
    .await
}
