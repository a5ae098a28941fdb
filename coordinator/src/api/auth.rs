//! Bearer-token extractors. Tokens are compared in constant time and never
//! logged. The API token guards submissions, the agent token registration.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::error::ApiFailure;
use super::AppState;

/// Present in a handler's arguments: the request carried the API token.
pub struct ApiToken;

/// Present in a handler's arguments: the request carried the agent token.
pub struct AgentToken;

impl FromRequestParts<AppState> for ApiToken {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check(parts, &state.api_token, "FLEET_API_TOKEN").map(|_| Self)
    }
}

impl FromRequestParts<AppState> for AgentToken {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check(parts, &state.agent_token, "FLEET_AGENT_TOKEN").map(|_| Self)
    }
}

fn check(parts: &Parts, expected: &str, env: &str) -> Result<(), ApiFailure> {
    let given = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            format!("missing `Authorization: Bearer <token>` header (the coordinator's {env})"),
        )),
        Some(token)
            if !expected.is_empty()
                && constant_time_eq(token.trim().as_bytes(), expected.as_bytes()) =>
        {
            Ok(())
        }
        Some(_) => Err(ApiFailure::new(StatusCode::UNAUTHORIZED, "invalid token")),
    }
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
