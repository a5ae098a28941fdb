//! Lease timing. The defaults are chosen for the promise in DESIGN: a
//! SIGKILLed agent's task is re-leased within 3 s (p99) while a slow but live
//! agent never loses its lease.
//!
//! Recovery ≤ TTL (2 s) + reaper tick (0.2 s) + idle poll (0.1 s) + jitter;
//! the lease script also reclaims expired leases itself, so recovery does not
//! wait for the coordinator. A live agent renews every TTL/4 from its own
//! task, so three consecutive renewals must fail before it loses the lease.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseSettings {
    /// Lease time-to-live by Redis clock, in ms. Default 2000.
    pub ttl_ms: u64,
    /// How often an agent renews, in ms. Default 500 (TTL/4).
    pub renew_every_ms: u64,
    /// An agent stops work when no renewal succeeded for TTL minus this, in
    /// ms (DESIGN L4). Default 400.
    pub safety_margin_ms: u64,
    /// Lease losses after which a task is dead-lettered as
    /// `escalated/lease_lost` (DESIGN L5). Default 5.
    pub lease_loss_budget: u32,
    /// How often the coordinator reaps expired leases, in ms. Default 200.
    pub reap_every_ms: u64,
    /// How long an idle agent waits before asking for work again, in ms.
    /// Default 100.
    pub idle_poll_ms: u64,
    /// Seconds a finished task's key stays in Redis (DESIGN L7). Default 86400.
    pub finished_ttl_s: u64,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            ttl_ms: 2000,
            renew_every_ms: 500,
            safety_margin_ms: 400,
            lease_loss_budget: 5,
            reap_every_ms: 200,
            idle_poll_ms: 100,
            finished_ttl_s: 86_400,
        }
    }
}

impl LeaseSettings {
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
    pub fn renew_every(&self) -> Duration {
        Duration::from_millis(self.renew_every_ms)
    }
    /// How long after sending a successful renewal the agent may keep working.
    pub fn local_deadline(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.saturating_sub(self.safety_margin_ms))
    }
    pub fn idle_poll(&self) -> Duration {
        Duration::from_millis(self.idle_poll_ms)
    }
    pub fn reap_every(&self) -> Duration {
        Duration::from_millis(self.reap_every_ms)
    }
    /// An agent counts as alive when Redis saw it within this many ms:
    /// three TTLs, so a missed presence touch or two never hides it.
    pub fn alive_window_ms(&self) -> u64 {
        3 * self.ttl_ms
    }

    /// Rejects settings under which a live agent could lose its lease.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl_ms < 200 {
            return Err("ttl_ms must be at least 200".into());
        }
        if self.renew_every_ms * 2 > self.ttl_ms {
            return Err("renew_every_ms must be at most half of ttl_ms".into());
        }
        if self.safety_margin_ms >= self.ttl_ms - self.renew_every_ms {
            return Err("safety_margin_ms must leave room for one renewal inside ttl_ms".into());
        }
        if self.lease_loss_budget == 0 {
            return Err("lease_loss_budget must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_recover_within_three_seconds() {
        let s = LeaseSettings::default();
        s.validate().unwrap();
        assert!(s.ttl_ms + s.reap_every_ms + s.idle_poll_ms < 3000);
    }

    #[test]
    fn renewing_too_rarely_is_refused() {
        let s = LeaseSettings {
            renew_every_ms: 1500,
            ..Default::default()
        };
        assert!(s.validate().is_err());
    }
}
