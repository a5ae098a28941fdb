//! Joining the fleet through the coordinator: `POST
//! /api/v1/agents/register` with the agent token answers where Redis is and
//! how leases are timed. Retried for a while so agents may start first.

use std::time::Duration;

use fleet_common::api::{AgentConfig, RegisterAgent};
use fleet_common::AgentId;
use reqwest::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::AgentError;

/// How long to keep trying while the coordinator starts.
pub const REGISTER_PATIENCE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers `agent`; `Ok(None)` if shutdown came first. A refused token
/// is fatal at once, since retrying cannot fix it.
pub async fn register(
    coordinator: &str,
    token: &str,
    registration: &RegisterAgent,
    shutdown: &CancellationToken,
) -> Result<Option<AgentConfig>, AgentError> {
    let url = format!(
        "{}/api/v1/agents/register",
        coordinator.trim_end_matches('/')
    );
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| AgentError::Registration(e.to_string()))?;
    let give_up = Instant::now() + REGISTER_PATIENCE;
    let mut wait = Duration::from_millis(250);
    loop {
        let why = match http
            .post(&url)
            .bearer_auth(token)
            .json(registration)
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                let config: AgentConfig = resp
                    .json()
                    .await
                    .map_err(|e| AgentError::Registration(format!("bad answer: {e}")))?;
                info!(agent = %registration.agent, key_prefix = %config.key_prefix, "registered with the coordinator");
                return Ok(Some(config));
            }
            Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                return Err(AgentError::TokenRefused)
            }
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                return Err(AgentError::Registration(format!("{status}: {body}")));
            }
            Ok(resp) => format!("status {}", resp.status()),
            Err(e) => e.to_string(),
        };
        if Instant::now() + wait > give_up {
            return Err(AgentError::Registration(format!(
                "coordinator unreachable: {why}"
            )));
        }
        warn!(url = %url, error = %why, retry_in_ms = wait.as_millis() as u64, "registration failed, retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// The registration body for this process.
pub fn registration_for(agent: &AgentId) -> RegisterAgent {
    RegisterAgent {
        agent: agent.clone(),
        host: crate::settings::hostname(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}
