//! Tells the fleet this agent is alive: the coordinator lists live agents
//! from the `agents` zset, stamped by Redis time.

use std::time::Duration;

use fleet_common::lease::LeaseClient;
use fleet_common::AgentId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::spawn::spawn;

pub const TOUCH_EVERY: Duration = Duration::from_secs(1);

pub fn spawn_presence(
    client: LeaseClient,
    agent: AgentId,
    stop: CancellationToken,
) -> JoinHandle<()> {
    spawn("presence", async move {
        let mut tick = tokio::time::interval(TOUCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Missing a touch only delays "alive"; the next tick retries.
            if let Err(e) = client.touch_agent(&agent).await {
                debug!(error = %e, "presence touch failed");
            }
        }
    })
}
