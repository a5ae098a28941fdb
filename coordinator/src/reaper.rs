//! The lease reaper: a background worker that reclaims expired leases
//! (DESIGN L5), notices a Redis that lost its data or restarted and rebuilds
//! the queue (DESIGN L6), and refreshes the queue gauges.
//!
//! Agents reclaim expired leases on their own too (inside the lease script),
//! so recovery does not depend on this tick; the reaper covers idle fleets.

use std::collections::HashMap;

use fleet_common::lease::LeaseClient;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::CoordinatorError;
use crate::metrics::Metrics;
use crate::reconcile::{reconcile, take_reconcile_request};

/// Expired leases reclaimed per tick, at most.
const REAP_LIMIT: u32 = 1000;
/// Protocol counters exported as gauges (bounded label set). Grants and
/// completions are not counted in Redis (they are on the hot path); the
/// ingester counts outcomes from events instead.
const PROTOCOL_COUNTERS: [&str; 4] = ["stale_rejected", "reclaimed", "dead_lettered", "released"];

pub struct Reaper {
    pool: PgPool,
    leases: LeaseClient,
    metrics: Metrics,
    /// Redis `run_id` seen at the last tick; a change means a restart.
    redis_run_id: Option<String>,
    /// Last protocol counters seen, to turn Redis's counters into ours.
    last_counters: HashMap<String, u64>,
    healthy: bool,
    /// The agents' Redis users, recreated when Redis restarts.
    acl: Option<crate::access::RedisAcl>,
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaperTick {
    pub requeued: u64,
    pub dead_lettered: u64,
    pub reconciled: bool,
}

impl Reaper {
    pub fn new(pool: PgPool, leases: LeaseClient, metrics: Metrics) -> Self {
        Self {
            pool,
            leases,
            metrics,
            redis_run_id: None,
            last_counters: HashMap::new(),
            healthy: true,
            acl: None,
        }
    }

    /// Recreate the agents' Redis ACL users whenever Redis restarts.
    pub fn with_acl(mut self, acl: Option<crate::access::RedisAcl>) -> Self {
        self.acl = acl;
        self
    }

    /// Ticks every `LeaseSettings::reap_every` until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.leases.settings().reap_every());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            // A tick is short (a few Redis calls); finishing it on shutdown
            // keeps a reconciliation from stopping halfway.
            match self.tick().await {
                Ok(_) if !self.healthy => {
                    tracing::info!("reaper recovered");
                    self.healthy = true;
                }
                Ok(_) => {}
                // Log the transition only: a Redis outage would otherwise
                // log five times a second.
                Err(error) if self.healthy => {
                    tracing::warn!(%error, "reaper tick failed; retrying every tick");
                    self.healthy = false;
                }
                Err(_) => {}
            }
        }
        tracing::info!("reaper stopped");
    }

    pub async fn tick(&mut self) -> Result<ReaperTick, CoordinatorError> {
        let mut out = ReaperTick::default();
        let run_id = redis_run_id(&self.leases).await?;
        let restarted = matches!((&self.redis_run_id, &run_id), (Some(a), Some(b)) if a != b);
        let missing = self.leases.generation().await?.is_none();
        let requested = take_reconcile_request();
        if let Some(acl) = self.acl.as_ref().filter(|_| missing || restarted) {
            // Before anything else: agents reconnect with these users.
            let users = acl.regrant_all(&self.pool).await?;
            tracing::info!(users, "recreated the agents' redis users");
        }
        if missing || restarted || requested {
            tracing::warn!(
                generation_missing = missing,
                redis_restarted = restarted,
                requested,
                "rebuilding the redis queue from postgres"
            );
            if let Err(e) = reconcile(&self.pool, &self.leases).await {
                if requested {
                    crate::reconcile::request_reconcile();
                }
                return Err(e);
            }
            self.metrics.reconciliations.inc();
            out.reconciled = true;
        }
        self.redis_run_id = run_id;

        let reaped = self.leases.reap(REAP_LIMIT).await?;
        out.requeued = reaped.requeued;
        out.dead_lettered = reaped.dead_lettered;
        if reaped.requeued + reaped.dead_lettered > 0 {
            tracing::info!(
                requeued = reaped.requeued,
                dead_lettered = reaped.dead_lettered,
                "reclaimed expired leases"
            );
        }
        self.refresh_gauges().await?;
        Ok(out)
    }

    async fn refresh_gauges(&mut self) -> Result<(), CoordinatorError> {
        let m = &self.metrics;
        let depth = self.leases.queue_depth().await?;
        m.queue_depth
            .with_label_values(&["ready"])
            .set(depth.ready as i64);
        m.queue_depth
            .with_label_values(&["leased"])
            .set(depth.leased as i64);
        m.leases_active.set(depth.leased as i64);
        let window = self.leases.settings().alive_window_ms();
        m.agents_alive
            .set(self.leases.live_agents(window).await?.len() as i64);

        let stats = self.leases.stats().await?;
        for name in PROTOCOL_COUNTERS {
            let now = stats.get(name).copied().unwrap_or(0);
            m.lease_protocol.with_label_values(&[name]).set(now as i64);
            // Reclaims happen in the lease script too (agents reap on their
            // way), so our counters follow Redis's, which count both paths.
            // A smaller value than last time means Redis lost its counters.
            let last = self
                .last_counters
                .insert(name.to_owned(), now)
                .unwrap_or(now);
            let delta = if now >= last { now - last } else { now };
            match name {
                "reclaimed" => m.lease_reclaims.inc_by(delta),
                "dead_lettered" => m.dead_lettered.inc_by(delta),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Redis's `run_id` from `INFO server`: it changes at every Redis start.
async fn redis_run_id(leases: &LeaseClient) -> Result<Option<String>, CoordinatorError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut leases.connection())
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|s| s.trim().to_owned()))
}
