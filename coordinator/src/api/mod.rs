//! The HTTP API. Reads need no token; submitting a run needs the API token
//! and registering an agent the agent token. Every error is a JSON
//! `ApiError`.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `POST /api/v1/runs` | API token | 201 `SubmitRunResponse` |
//! | `GET /api/v1/runs/{id}` | — | `RunStatus` |
//! | `GET /api/v1/runs/{id}/report` | — | `RunReport` (totals and one row per rule) |
//! | `GET /api/v1/runs/{id}/history` | — | `RunHistory` (the comparable runs up to it, oldest first, with rates and comparisons) |
//! | `POST /api/v1/runs/{id}/dream[?dry_run=true]` | API token | `DreamReport` (409 while the run is running) |
//! | `GET /api/v1/promotions[?open=true]` | — | `Vec<PromotionInfo>`, newest first |
//! | `POST /api/v1/promotions/{id}/approve`, `…/reject` | API token | `LedgerLine` (409 unless an open escalation) |
//! | `GET /api/v1/bundle?skill_pack=P[&profile=X]` | API token | `Bundle` (`main`'s skills for the profile, in the pack's order) |
//! | `GET /api/v1/agents` | — | `Vec<AgentInfo>` |
//! | `POST /api/v1/agents/register` | agent's own token or the enrollment token | `AgentConfig` (Redis URL with the agent's ACL user) |
//! | `POST /api/v1/agents/{id}/tokens` | API token | 201 `IssuedAgentToken` (the token is shown only here) |
//! | `POST /api/v1/agents/{id}/revoke` | API token | `AgentRevoked` (tokens, git access and Redis user) |
//! | `GET /healthz` | — | `ok`, or 503 naming the store that failed |
//! | `GET /metrics` | — | Prometheus text exposition |

mod agents;
mod auth;
mod bundle;
mod dream;
mod error;
mod health;
mod hosts;
mod json;
mod runs;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use fleet_common::api::AgentConfig;
use fleet_common::lease::LeaseClient;
use sqlx::PgPool;

use crate::access::AgentAccess;
use crate::dream::Dreamer;
use crate::metrics::Metrics;
use crate::packs::SkillPacks;

pub use auth::constant_time_eq;
pub use error::ApiFailure;

/// A submission of 100,000 rule ids is a few MB of JSON.
const SUBMIT_BODY_LIMIT: usize = 32 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub leases: LeaseClient,
    pub packs: SkillPacks,
    pub metrics: Metrics,
    pub api_token: String,
    pub agent_token: String,
    /// Registration answers: `knowledge_url` is the same for all; the git
    /// password is derived per agent from `git_secret`.
    pub agent_config: AgentConfig,
    /// Secret of the agents' git passwords; empty = none handed out.
    pub git_secret: String,
    pub dreamer: Dreamer,
    /// Revocations and the agents' Redis ACL users.
    pub access: AgentAccess,
}

impl std::fmt::Debug for AppState {
    // Tokens never reach a log line, even through a Debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("packs", &self.packs)
            .field("api_token", &"<redacted>")
            .field("agent_token", &"<redacted>")
            .field("git_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/runs",
            post(runs::submit).layer(DefaultBodyLimit::max(SUBMIT_BODY_LIMIT)),
        )
        .route("/api/v1/runs/{id}", get(runs::get))
        .route("/api/v1/runs/{id}/report", get(runs::report))
        .route("/api/v1/runs/{id}/history", get(runs::history))
        .route("/api/v1/runs/{id}/dream", post(dream::dream))
        .route("/api/v1/promotions", get(dream::list))
        .route("/api/v1/promotions/{id}/approve", post(dream::approve))
        .route("/api/v1/promotions/{id}/reject", post(dream::reject))
        .route("/api/v1/bundle", get(bundle::bundle))
        .route("/api/v1/bundle/check", post(hosts::check))
        .route("/api/v1/harden", post(hosts::harden))
        .route("/api/v1/runs/{id}/hosts", get(hosts::list))
        .route("/api/v1/agents", get(agents::list))
        .route("/api/v1/agents/register", post(agents::register))
        .route("/api/v1/agents/{id}/tokens", post(agents::issue))
        .route("/api/v1/agents/{id}/revoke", post(agents::revoke))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async {
            ApiFailure::not_found(
                "no such route; see /api/v1/runs, /api/v1/agents, /healthz, /metrics",
            )
        })
        .with_state(state)
}
