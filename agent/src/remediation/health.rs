//! Health after an attempt: the target answers at all, then every health
//! check of the run's skill pack exits 0 on it (run in the target, like any
//! script, never on the agent's host).

use std::time::Duration;

use fleet_common::HealthCheck;
use tracing::warn;

use crate::workbench::Target;

/// How the target came out of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Names of the checks that failed; `target` when it did not answer.
    pub failed: Vec<String>,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Name reported when the target itself does not answer.
pub const UNRESPONSIVE: &str = "target";

pub async fn check(target: &dyn Target, checks: &[HealthCheck]) -> Health {
    if !target.health().await {
        return Health {
            failed: vec![UNRESPONSIVE.to_owned()],
        };
    }
    let mut failed = Vec::new();
    for c in checks {
        let timeout = Duration::from_secs(u64::from(c.timeout_s.max(1)));
        match target.exec(&c.command, timeout).await {
            Ok(r) if r.exit_code == Some(0) => {}
            Ok(r) => {
                warn!(check = %c.name, exit_code = ?r.exit_code, timed_out = r.timed_out, output = %r.output, "health check failed");
                failed.push(c.name.clone());
            }
            Err(e) => {
                warn!(check = %c.name, error = %e, "health check could not run");
                failed.push(c.name.clone());
            }
        }
    }
    Health { failed }
}
