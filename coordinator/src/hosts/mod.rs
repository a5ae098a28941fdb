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

use std::path::Path;

use fleet_common::bundle::Bundle;
use sqlx::PgPool;

use crate::error::CoordinatorError;
use crate::packs::SkillPacks;

pub use results::{bundle_check, host_rows};
pub use rollout::NOT_STARTED;
pub use submit::{submit_and_release, validate_host_name, HostRun};
pub use worker::HostWorker;

/// The bundle as it is checked, rolled out and exported: `main`'s bundle
/// (H2) without the skills a composition check took out and an operator
/// has not decided on yet (H3).
pub async fn current_bundle(
    pool: &PgPool,
    packs: &SkillPacks,
    knowledge_dir: &Path,
    skill_pack: &str,
    profile: Option<&str>,
) -> Result<Bundle, CoordinatorError> {
    let mut bundle = crate::bundle::load(packs, knowledge_dir, skill_pack, profile).await?;
    let excluded = review::excluded_rules(pool).await?;
    bundle.sections.retain(|s| !excluded.contains(&s.rule));
    Ok(bundle)
}
