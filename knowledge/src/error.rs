//! The one error type of this crate.

use std::path::PathBuf;

/// What can go wrong with the knowledge repo.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// A libgit2 call failed.
    #[error("git: {0}")]
    Git(#[from] git2::Error),

    /// A filesystem call failed.
    #[error("io on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A family, lesson id, rule, run or agent id is not `[A-Za-z0-9._-]{1,128}`.
    #[error("invalid {what} component {value:?}")]
    InvalidComponent { what: &'static str, value: String },

    /// A lesson file's front matter does not parse.
    #[error("malformed lesson front matter: {0}")]
    Malformed(String),

    /// `main` kept moving while we tried to update it.
    #[error("main moved {tries} times while updating it")]
    MainContended { tries: u32 },

    /// The remote refused a pushed ref (hook, non-fast-forward, ...).
    #[error("push of {refname} refused: {reason}")]
    PushRefused { refname: String, reason: String },

    /// A worktree path escapes its worktree.
    #[error("path {0:?} is not a relative path inside the worktree")]
    BadRelativePath(PathBuf),

    /// `ranking.json` or another JSON file does not parse.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl KnowledgeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> KnowledgeError {
        let path = path.into();
        move |source| KnowledgeError::Io { path, source }
    }
}
