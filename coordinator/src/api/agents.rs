//! `GET /api/v1/agents` and `POST /api/v1/agents/register`.

use axum::extract::State;
use axum::Json;
use fleet_common::api::{AgentConfig, AgentInfo, RegisterAgent};
use fleet_common::AgentId;

use super::auth::AgentToken;
use super::error::ApiFailure;
use super::json::ApiJson;
use super::AppState;
use crate::status;

const MAX_FIELD: usize = 255;

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<AgentInfo>>, ApiFailure> {
    Ok(Json(status::agents(&state.pool, &state.leases).await?))
}

/// Records the agent and answers what it needs to join: Redis and lease
/// timing, and the knowledge repo's URL with this agent's git password
/// (K2). An agent thus needs only the coordinator's URL and a token.
pub async fn register(
    State(state): State<AppState>,
    _auth: AgentToken,
    ApiJson(req): ApiJson<RegisterAgent>,
) -> Result<Json<AgentConfig>, ApiFailure> {
    let agent = AgentId::parse(req.agent.as_str()).map_err(ApiFailure::bad_request)?;
    for (name, value) in [("host", &req.host), ("version", &req.version)] {
        if value.len() > MAX_FIELD || value.contains('\0') {
            return Err(ApiFailure::bad_request(format!(
                "{name} must be at most {MAX_FIELD} bytes without NUL characters"
            )));
        }
    }
    sqlx::query(
        "INSERT INTO agents (id, host, version) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, version = EXCLUDED.version,
                                        last_registered_at = now()",
    )
    .bind(agent.as_str())
    .bind(&req.host)
    .bind(&req.version)
    .execute(&state.pool)
    .await?;
    tracing::info!(agent = %agent, host = %req.host, version = %req.version, "agent registered");
    let mut config = state.agent_config.clone();
    if config.knowledge_url.is_some() && !state.git_secret.is_empty() {
        config.git_password = Some(fleet_knowledge::agent_git_password(
            state.git_secret.as_bytes(),
            agent.as_str(),
        ));
    }
    Ok(Json(config))
}
