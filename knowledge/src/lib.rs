//! The knowledge repo (DESIGN.md K1–K4): a bare git repo owned by the
//! coordinator, whose `main` holds lessons, skills and the published
//! ranking, and to which agents push one branch per lease.
//!
//! Used by both the coordinator and the agent; depends on neither.
//!
//! # Layout
//!
//! - `layout.rs`: K4, what `main` holds — `LessonFile` (front matter
//!   render/parse), `skills/<rule>.sh`, `Ranking` (`ranking.json`).
//! - `component.rs`: the `[A-Za-z0-9._-]{1,128}` rule for every family,
//!   id, rule, run and agent id that ends up in a path or a ref.
//! - `main_ref.rs`: K1, `update_main` — build on the current `main`, move
//!   it by compare-and-swap, rebuild and retry when it moved.
//! - `main_tree.rs`: the coordinator's reads of `main` (lessons, skills,
//!   ranking, blob ids, the commits that last wrote a file) and
//!   `commit_changes`, a set of writes and deletes as one fast-forward
//!   commit (a no-op when nothing changes).
//! - `trailers.rs`: `Fleet-Action`/`Fleet-Run`/`Fleet-Ledger`, the trailers
//!   of the dream stage's commits, written and parsed.
//! - `bare.rs`: the coordinator's bare repo — `init_bare` (first commit
//!   from the skill packs, receive config, the pre-receive hook of K2).
//! - `serve.rs`: K2, git smart HTTP (`git http-backend` as CGI) behind an
//!   axum router with per-agent HMAC passwords.
//! - `worktree.rs`: K3, the agent side — `AgentCheckout` (local cache,
//!   fetch, leftovers, what the fetched `main` holds for a lease: lessons,
//!   ranking, a rule's skill) and `LeaseWorktree` (write, commit, push, remove).
//! - `lock.rs`: the cross-process lock around worktree add/remove.
//! - `error.rs`: `KnowledgeError`.

mod bare;
mod component;
mod error;
pub mod layout;
mod lock;
mod main_ref;
mod main_tree;
mod serve;
pub mod trailers;
mod worktree;

pub use bare::{init_bare, PRE_RECEIVE_HOOK};
pub use component::{validate_component, MAX_COMPONENT_LEN};
pub use error::KnowledgeError;
pub use layout::{LessonFile, LessonKind, MergedFrom, Provenance, RankedLesson, Ranking};
pub use main_ref::{commit_files_on_main, tree_with_file, update_main, MAIN_REF, MAX_TRIES};
pub use main_tree::{commit_changes, Committed, FileChange, FileWrite, MainTree};
pub use serve::{agent_git_password, router, AgentCheck, GitHttpState};
pub use trailers::{DreamAction, DreamTrailers};
pub use worktree::{
    push_refspec, AgentCheckout, AgentCredentials, FetchedSkill, LeaseWorktree, FETCHED_MAIN,
};
