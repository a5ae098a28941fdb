//! The agent's resolved settings, whatever they came from (flags, env, or
//! the coordinator's registration answer).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fleet_common::settings::LeaseSettings;
use fleet_common::AgentId;

/// Where the agent learns its Redis and lease timing.
#[derive(Debug, Clone)]
pub enum Connection {
    /// Register with the coordinator, which answers with both.
    Coordinator { url: String, token: String },
    /// Straight to Redis (tests, benches), lease timing at its defaults.
    Direct {
        redis_url: String,
        key_prefix: String,
        lease: LeaseSettings,
    },
}

/// Which Worker writes the scripts. Only the simulation exists so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrainKind {
    /// Deterministic simulated brain, target and evaluator (no host effects).
    Sim,
}

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub agent: AgentId,
    pub connection: Connection,
    pub brain: BrainKind,
    /// Simulated work per attempt (sim brain only).
    pub sim_work: Duration,
    /// Stop after this many completed leases; `None`: run until shutdown.
    pub max_leases: Option<u64>,
    pub metrics_listen: Option<SocketAddr>,
    /// Leases worked at once, each on its own target. 1 for now.
    pub slots: usize,
    /// The agent's cache of the knowledge repo (used only when the
    /// coordinator serves one); `None`: `.fleet/agents/<agent-id>`.
    pub work_dir: Option<PathBuf>,
}

/// This machine's host name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".to_owned())
}
