//! SIGTERM and SIGINT become one cancellation token, fanned out to every
//! part of the agent. A second signal exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::AgentError;
use crate::spawn::spawn;

pub fn shutdown_on_signals() -> Result<CancellationToken, AgentError> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let fired = token.clone();
    spawn("signals", async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(
            signal = name,
            "shutting down: handing back leases and flushing events"
        );
        fired.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!("second signal: exiting now");
        std::process::exit(130);
    });
    Ok(token)
}
