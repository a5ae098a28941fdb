//! K3: the cross-process lock around worktree add/remove in an agent cache.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::KnowledgeError;

/// An exclusive `flock` on `<cache>/lock`, released on drop. Each guard
/// opens the file itself, so two threads of one process exclude each other
/// too (flock locks belong to the open file description).
pub struct CacheLock {
    file: File,
    path: PathBuf,
}

impl CacheLock {
    pub fn acquire(cache_dir: &Path) -> Result<CacheLock, KnowledgeError> {
        let path = cache_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(KnowledgeError::io(&path))?;
        fs4::fs_std::FileExt::lock_exclusive(&file).map_err(KnowledgeError::io(&path))?;
        Ok(CacheLock { file, path })
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        if let Err(e) = fs4::fs_std::FileExt::unlock(&self.file) {
            tracing::warn!(path = %self.path.display(), error = %e, "unlocking the cache lock");
        }
    }
}
