//! Hardening hosts (DESIGN H3–H5) on the coordinator's side: host runs
//! (compose, harden) in Postgres, the rollout controller that releases
//! their hosts into the lease queue, the review of composition checks
//! into the ledger, and the read models of host results.
//!
//! - `submit`: a host run and its held work items, one per host.
//! - `rollout`: concurrency, canaries, failure threshold (pure `decide`).
//! - `results`: each host's accepted report; a compose run's figures.
//! - `review`: interfering or health-breaking skills leave the bundle
//!   with an open ledger entry.
//! - `worker`: the background loop running the last two.

pub mod preflight;
pub mod results;
pub mod review;
pub mod rollout;
pub mod submit;
mod worker;

pub use results::{bundle_check, host_rows};
pub use rollout::NOT_STARTED;
pub use submit::{submit_and_release, validate_host_name, HostRun};
pub use worker::HostWorker;
