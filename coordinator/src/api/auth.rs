//! Bearer-token extractors. Tokens are compared in constant time (or by
//! their SHA-256 in Postgres) and never logged. The API token guards every
//! write; registration takes a per-agent token issued through the API, or
//! the shared enrollment token when the coordinator has one.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::error::ApiFailure;
use super::AppState;
use crate::access;

/// Present in a handler's arguments: the request carried the API token.
pub struct ApiToken;

/// Present in a handler's arguments: the request carried an agent
/// credential.
pub enum AgentCredential {
    /// A per-agent token, good only for its own agent.
    Issued(crate::access::TokenOwner),
    /// The shared enrollment token (`--agent-token`), good for any agent
    /// not revoked.
    Enrollment,
}

impl FromRequestParts<AppState> for ApiToken {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check(parts, &state.api_token, "FLEET_API_TOKEN").map(|_| Self)
    }
}

impl FromRequestParts<AppState> for AgentCredential {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts, "a token from `fleet-coordinator agents issue`")?;
        if access::tokens::looks_issued(token) {
            return match access::tokens::owner(&state.pool, token).await? {
                Some(owner) => Ok(Self::Issued(owner)),
                None => Err(invalid()),
            };
        }
        let enrollment = &state.agent_token;
        if !enrollment.is_empty()
            && constant_time_eq(token.trim().as_bytes(), enrollment.as_bytes())
        {
            Ok(Self::Enrollment)
        } else {
            Err(invalid())
        }
    }
}

fn check(parts: &Parts, expected: &str, env: &str) -> Result<(), ApiFailure> {
    let token = bearer(parts, &format!("the coordinator's {env}"))?;
    if !expected.is_empty() && constant_time_eq(token.trim().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(invalid())
    }
}

fn bearer<'a>(parts: &'a Parts, which: &str) -> Result<&'a str, ApiFailure> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                format!("missing `Authorization: Bearer <token>` header ({which})"),
            )
        })
}

fn invalid() -> ApiFailure {
    ApiFailure::new(StatusCode::UNAUTHORIZED, "invalid token")
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guessed token was right (only its length, which is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_plain_equality() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
