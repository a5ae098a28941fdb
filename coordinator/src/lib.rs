//! The fleet coordinator: HTTP API, planner, lease reaper, event ingester
//! and metrics. Postgres holds the truth; Redis holds only the live queue,
//! which the coordinator can rebuild at any time (DESIGN L6).
//!
//! # Layout
//!
//! - [`access`]: per-agent tokens, revocations, Redis ACL users (issue 9).
//! - [`api`]: axum router and handlers; bearer tokens; JSON errors.
//! - [`dream`]: the dream stage; for now its promotion gate stack (DESIGN D7).
//! - [`bundle`]: `main`'s skills for a profile in the pack's order (DESIGN
//!   H2) and its exports as a bash script or an Ansible playbook (H6).
//! - [`db`]: Postgres pool (optionally confined to one schema) and migrations.
//! - [`planner`]: a submission becomes a run and work items, then Redis tasks.
//! - [`validate`]: what a submission may contain, with helpful messages.
//! - [`packs`]: skill packs on disk (`<dir>/<name>/pack.toml`).
//! - [`catalog`]: rule catalogs of the packs' SCAP datastreams, cached.
//! - [`scan`]: the planner's whole-profile scan of the target image.
//! - [`reconcile`]: rebuild the Redis queue from Postgres under a new epoch
//!   generation (DESIGN L1, L6).
//! - [`ingest`]: event stream → Postgres, exactly once per event id; bad
//!   entries to quarantine (DESIGN E2, E3, L7).
//! - [`hosts`]: host runs (compose, harden): submission, the rollout
//!   controller, composition review, host results (DESIGN H3–H5).
//! - [`reaper`]: reclaims expired leases, detects a Redis restart or data
//!   loss and reconciles, refreshes gauges.
//! - [`serve`]: startup (migrate, drain, reconcile), workers, ordered shutdown.
//! - [`dream`]: after each run — comparison with the previous comparable
//!   run, automatic reverts, gated promotion onto `main`, credit and the
//!   published ranking (DESIGN D1–D8).
//! - [`status`]: read models (run progress, agent roster).
//! - [`metrics`]: Prometheus registry and every coordinator metric.
//! - [`error`]: `CoordinatorError`; store errors are mapped there only.
//! - `worker`: spawning workers in tracing spans, joining them in order.
//! - `queue`: the queued form of a work item, shared by planner and reconcile.

pub mod access;
pub mod api;
pub mod bundle;
pub mod catalog;
pub mod db;
pub mod dream;
pub mod error;
pub mod hosts;
pub mod ingest;
pub mod metrics;
pub mod packs;
pub mod planner;
mod queue;
pub mod reaper;
pub mod reconcile;
pub mod scan;
pub mod serve;
pub mod status;
pub mod validate;
mod worker;

pub use error::CoordinatorError;
pub use metrics::Metrics;
pub use packs::SkillPacks;
