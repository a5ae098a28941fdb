//! Per-agent tokens. A token is 32 random bytes, shown once as
//! `fleet_agent_<hex>`; Postgres keeps only its SHA-256, so a database
//! leak does not leak credentials.

use fleet_common::api::IssuedAgentToken;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::CoordinatorError;

const PREFIX: &str = "fleet_agent_";

/// The agent a valid, unrevoked token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub token_id: i64,
    pub agent: String,
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.trim().as_bytes()).to_vec()
}

/// Whether `token` has the shape of a per-agent token (so a shared token
/// is not looked up in Postgres at all).
pub fn looks_issued(token: &str) -> bool {
    token.trim().starts_with(PREFIX)
}

/// A new token for `agent`; also lifts a revocation of the agent.
pub async fn issue(
    pool: &PgPool,
    agent: &str,
    by: &str,
) -> Result<IssuedAgentToken, CoordinatorError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("{PREFIX}{}", hex::encode(raw));
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO agents (id) VALUES ($1)
         ON CONFLICT (id) DO UPDATE SET revoked_at = NULL",
    )
    .bind(agent)
    .execute(&mut *tx)
    .await?;
    let token_id: i64 = sqlx::query_scalar(
        "INSERT INTO agent_tokens (agent_id, token_sha256, issued_by)
         VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(agent)
    .bind(digest(&token))
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(IssuedAgentToken {
        agent: agent.to_owned(),
        token_id,
        token,
    })
}

/// The owner of `token`, if it was issued and is not revoked.
pub async fn owner(pool: &PgPool, token: &str) -> Result<Option<TokenOwner>, CoordinatorError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, agent_id FROM agent_tokens
         WHERE token_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(digest(token))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(token_id, agent)| TokenOwner { token_id, agent }))
}

/// Revokes every token of `agent` and marks the agent revoked; returns how
/// many tokens were still valid.
pub async fn revoke(pool: &PgPool, agent: &str) -> Result<u64, CoordinatorError> {
    let mut tx = pool.begin().await?;
    let revoked = sqlx::query(
        "UPDATE agent_tokens SET revoked_at = now()
         WHERE agent_id = $1 AND revoked_at IS NULL",
    )
    .bind(agent)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "INSERT INTO agents (id, revoked_at) VALUES ($1, now())
         ON CONFLICT (id) DO UPDATE SET revoked_at = now()",
    )
    .bind(agent)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(revoked)
}

/// Every agent revoked and not issued a token since.
pub async fn revoked_agents(pool: &PgPool) -> Result<Vec<String>, CoordinatorError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM agents WHERE revoked_at IS NOT NULL")
            .fetch_all(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_digest_of_a_trimmed_token_is_compared() {
        assert_eq!(digest("fleet_agent_ab"), digest(" fleet_agent_ab\n"));
        assert_ne!(digest("fleet_agent_ab"), digest("fleet_agent_ac"));
        assert_eq!(digest("x").len(), 32);
    }

    #[test]
    fn issued_tokens_are_recognised_by_their_prefix() {
        assert!(looks_issued("fleet_agent_00ff"));
        assert!(!looks_issued("a-shared-enrollment-token"));
    }
}
