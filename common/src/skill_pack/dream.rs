//! `[dream]`: how far one dream pass may go for this pack (DESIGN D6–D8).

use serde::Deserialize;

/// Limits of one dream pass over a run of the pack.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DreamSettings {
    /// Above this share of a run's rules with an infrastructure outcome
    /// (an outage, dead targets, lost leases), the run reverts nothing:
    /// what it could not try says nothing about knowledge.
    pub max_not_comparable: f64,
    /// Promotions one pass applies; the rest wait for the next pass,
    /// strongest evidence first (the Dream Daemon's bound).
    pub max_promotions: u32,
    /// Seconds one pass may spend promoting; past it the rest are deferred
    /// and the pass ends cleanly.
    pub wall_time_s: u32,
}

impl Default for DreamSettings {
    fn default() -> Self {
        Self {
            max_not_comparable: 0.2,
            max_promotions: 25,
            wall_time_s: 120,
        }
    }
}

impl DreamSettings {
    pub(super) fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.max_not_comparable) {
            return Err(format!(
                "[dream] max_not_comparable must be a share between 0 and 1, not {}",
                self.max_not_comparable
            ));
        }
        if self.wall_time_s == 0 {
            return Err("[dream] wall_time_s must be at least 1".into());
        }
        Ok(())
    }
}
