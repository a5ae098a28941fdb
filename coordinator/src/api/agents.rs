//! `GET /api/v1/agents`, `POST /api/v1/agents/register`, and per-agent
//! credentials: `POST /api/v1/agents/{id}/tokens` (issue) and
//! `POST /api/v1/agents/{id}/revoke`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use fleet_common::api::{
    AgentConfig, AgentInfo, AgentRevoked, IssueAgentToken, IssuedAgentToken, RegisterAgent,
};
use fleet_common::AgentId;

use super::auth::{AgentCredential, ApiToken};
use super::error::ApiFailure;
use super::json::ApiJson;
use super::AppState;
use crate::access::{self, redis_acl};
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
    credential: AgentCredential,
    ApiJson(req): ApiJson<RegisterAgent>,
) -> Result<Json<AgentConfig>, ApiFailure> {
    let agent = AgentId::parse(req.agent.as_str()).map_err(ApiFailure::bad_request)?;
    match &credential {
        AgentCredential::Issued(owner) if owner.agent != agent.as_str() => {
            return Err(ApiFailure::new(
                StatusCode::FORBIDDEN,
                format!("this token belongs to agent {}, not {agent}", owner.agent),
            ));
        }
        AgentCredential::Enrollment if state.access.revoked.is_revoked(agent.as_str()) => {
            return Err(ApiFailure::new(
                StatusCode::FORBIDDEN,
                format!("agent {agent} was revoked: issue it a new token (`fleet-coordinator agents issue {agent}`)"),
            ));
        }
        _ => {}
    }
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
    // Numbered here rather than by Redis alone: a Redis that lost its data
    // would hand out numbers again, and two processes of one agent would
    // share an event sequence. Redis's count still bounds it from below,
    // for agents numbered there before.
    let from_redis = state
        .leases
        .next_incarnation(&agent)
        .await
        .map_err(crate::error::CoordinatorError::from)?;
    let incarnation: i64 = sqlx::query_scalar(
        "UPDATE agents SET incarnations = GREATEST(incarnations + 1, $2) WHERE id = $1
         RETURNING incarnations",
    )
    .bind(agent.as_str())
    .bind(i64::from(from_redis))
    .fetch_one(&state.pool)
    .await?;
    let incarnation = u32::try_from(incarnation)
        .map_err(|_| ApiFailure::bad_request(format!("agent {agent} ran out of incarnations")))?;
    let credential = match credential {
        AgentCredential::Issued(owner) => format!("token {}", owner.token_id),
        AgentCredential::Enrollment => "enrollment token".to_owned(),
    };
    tracing::info!(agent = %agent, host = %req.host, version = %req.version, %credential, incarnation, "agent registered");
    let mut config = state.agent_config.clone();
    config.incarnation = Some(incarnation);
    if let Some(acl) = &state.access.redis_acl {
        let (user, password) = acl.grant(agent.as_str()).await?;
        config.redis_url = redis_acl::url_with_credentials(&config.redis_url, &user, &password)?;
    }
    if config.knowledge_url.is_some() && !state.git_secret.is_empty() {
        config.git_password = Some(fleet_knowledge::agent_git_password(
            state.git_secret.as_bytes(),
            agent.as_str(),
        ));
    }
    Ok(Json(config))
}

/// Issues a new token for the agent (and lifts a revocation); the token is
/// in this answer only.
pub async fn issue(
    State(state): State<AppState>,
    _auth: ApiToken,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<IssueAgentToken>,
) -> Result<(StatusCode, Json<IssuedAgentToken>), ApiFailure> {
    let agent = AgentId::parse(&id).map_err(ApiFailure::bad_request)?;
    if req.by.len() > MAX_FIELD {
        return Err(ApiFailure::bad_request(format!(
            "by must be at most {MAX_FIELD} bytes"
        )));
    }
    let issued = access::tokens::issue(&state.pool, agent.as_str(), &req.by).await?;
    state.access.revoked.restore(agent.as_str());
    state.metrics.agent_credentials("issued");
    tracing::info!(agent = %agent, token_id = issued.token_id, by = %req.by, "agent token issued");
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Revokes every token of the agent, its git access and its Redis user.
pub async fn revoke(
    State(state): State<AppState>,
    _auth: ApiToken,
    Path(id): Path<String>,
) -> Result<Json<AgentRevoked>, ApiFailure> {
    let agent = AgentId::parse(&id).map_err(ApiFailure::bad_request)?;
    let tokens_revoked = access::tokens::revoke(&state.pool, agent.as_str()).await?;
    state.access.revoked.revoke(agent.as_str());
    let redis_user_deleted = match &state.access.redis_acl {
        Some(acl) => acl.revoke(agent.as_str()).await?,
        None => false,
    };
    state.metrics.agent_credentials("revoked");
    tracing::info!(agent = %agent, tokens_revoked, redis_user_deleted, "agent revoked");
    Ok(Json(AgentRevoked {
        agent: agent.to_string(),
        tokens_revoked,
        redis_user_deleted,
    }))
}
