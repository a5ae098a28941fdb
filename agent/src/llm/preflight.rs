//! The start check of an agent with an LLM brain: before it registers or
//! leases anything, the endpoint must answer `/models` with the key and
//! list the model. A wrong URL, key or model fails at once (waiting does
//! not fix a setting); an endpoint that is down is asked again for
//! `start_wait`, since it may be starting beside the agent.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::models::{EndpointError, ModelsProbe};

/// `Ok(true)`: the endpoint is ready; `Ok(false)`: shutdown came first.
pub async fn preflight(
    probe: &ModelsProbe,
    start_wait: Duration,
    shutdown: &CancellationToken,
) -> Result<bool, EndpointError> {
    let give_up = Instant::now() + start_wait;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times();
    let checked = (|| probe.check())
        .retry(backoff)
        .when(|e: &EndpointError| e.transient() && Instant::now() < give_up)
        .notify(|e, wait| {
            warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "LLM endpoint not ready at start; asking again")
        });
    let checked = tokio::select! {
        r = checked => r,
        _ = shutdown.cancelled() => return Ok(false),
    };
    checked?;
    info!(
        url = probe.url(),
        model = probe.model(),
        "LLM endpoint ready: key accepted, model listed"
    );
    Ok(true)
}
