//! Bodies of the coordinator's HTTP API, shared by its CLI and the agents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, RunId};
use crate::settings::LeaseSettings;
use crate::task::Budgets;

/// `POST /api/v1/runs` (needs the API token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// Skill pack name: a directory under the coordinator's `--skill-packs`.
    pub skill_pack: String,
    /// Profile; defaults to the skill pack's.
    #[serde(default)]
    pub profile: Option<String>,
    /// Rule ids to remediate, in submission order, at most 100,000, unique.
    /// Empty or absent: every rule of the profile (packs with SCAP content).
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub budgets: Budgets,
    /// Lower runs first among runs in the queue. Default 100.
    #[serde(default = "SubmitRun::default_priority")]
    pub priority: u32,
}

impl SubmitRun {
    pub const MAX_RULES: usize = 100_000;

    fn default_priority() -> u32 {
        100
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRunResponse {
    pub run: RunId,
    pub tasks: u64,
    /// Tasks recorded as `already_passing` by the planner's baseline scan
    /// (never leased); included in `tasks`.
    #[serde(default)]
    pub already_passing: u64,
}

/// `GET /api/v1/runs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStatus {
    pub run: RunId,
    pub skill_pack: String,
    pub profile: String,
    /// `running` or `completed`.
    pub status: String,
    pub total: u64,
    pub finished: u64,
    pub fixed: u64,
    /// Fixed on the first attempt.
    #[serde(default)]
    pub fixed_first_try: u64,
    pub already_passing: u64,
    pub escalated: u64,
    pub escalated_by_reason: BTreeMap<String, u64>,
    pub lease_losses: u64,
    pub stale_completions_rejected: u64,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// `POST /api/v1/agents/register` (needs the agent token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub agent: AgentId,
    pub host: String,
    pub version: String,
}

/// What an agent needs to join: where Redis is, how leases are timed, and
/// where the knowledge repo is with this agent's git password.
#[derive(Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    pub redis_url: String,
    pub key_prefix: String,
    pub lease: LeaseSettings,
    /// Git smart-HTTP URL of the knowledge repo, e.g.
    /// `http://coordinator:8080/git/knowledge.git`; `None`: not served.
    #[serde(default)]
    pub knowledge_url: Option<String>,
    /// This agent's password for `knowledge_url` (user = agent id).
    #[serde(default)]
    pub git_password: Option<String>,
}

impl std::fmt::Debug for AgentConfig {
    // The git password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("redis_url", &self.redis_url)
            .field("key_prefix", &self.key_prefix)
            .field("lease", &self.lease)
            .field("knowledge_url", &self.knowledge_url)
            .field(
                "git_password",
                &self.git_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `GET /api/v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub agent: AgentId,
    pub host: String,
    pub version: String,
    pub registered_at: String,
    /// Redis-clock ms of the last lease call, renewal or heartbeat.
    pub last_seen_ms: Option<i64>,
    pub alive: bool,
}

impl RunStatus {
    /// fixed / (fixed + escalated): rules already passing are not counted.
    pub fn fix_rate(&self) -> Option<f64> {
        let attempted = self.fixed + self.escalated;
        (attempted > 0).then(|| self.fixed as f64 / attempted as f64)
    }

    /// Share of fixed rules that were fixed on the first attempt.
    pub fn first_try_rate(&self) -> Option<f64> {
        (self.fixed > 0).then(|| self.fixed_first_try as f64 / self.fixed as f64)
    }
}

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}
