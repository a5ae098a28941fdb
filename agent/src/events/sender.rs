//! The one task that writes events to Redis, strictly in seq order.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use fleet_common::event::Event;
use fleet_common::lease::{Completion, Lease, LeaseClient, LeaseError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Outgoing;
use crate::metrics::AgentMetrics;

/// Retry forever with a 1 s cap: an event is never skipped, because a
/// skipped seq is a gap the ingester can never fill.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
}

/// Only transport errors are worth retrying; a protocol error would repeat.
fn transient(e: &LeaseError) -> bool {
    matches!(e, LeaseError::Redis(_))
}

pub(super) async fn run(
    client: LeaseClient,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    acked: watch::Sender<u64>,
    metrics: AgentMetrics,
    stop: CancellationToken,
) {
    while let Some(item) = rx.recv().await {
        let seq = item.seq();
        let delivered = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            ok = deliver(&client, item, &metrics) => ok,
        };
        if delivered {
            metrics.events_sent.inc();
            acked.send_replace(seq);
        }
    }
}

/// True when the stream now holds the event.
async fn deliver(client: &LeaseClient, item: Outgoing, metrics: &AgentMetrics) -> bool {
    match item {
        Outgoing::Append(event) => {
            let r = (|| client.append_event(&event))
                .retry(backoff())
                .when(transient)
                .notify(|e, after| retried(metrics, &event, e, after))
                .await;
            if let Err(e) = &r {
                warn!(seq = event.seq, error = %e, "event could not be appended");
            }
            r.is_ok()
        }
        Outgoing::Complete {
            lease,
            event,
            reply,
        } => {
            let r = complete(client, &lease, &event, metrics).await;
            let ok = r.is_ok();
            let _ = reply.send(r);
            ok
        }
    }
}

async fn complete(
    client: &LeaseClient,
    lease: &Lease,
    event: &Event,
    metrics: &AgentMetrics,
) -> Result<Completion, LeaseError> {
    (|| client.complete(lease, event))
        .retry(backoff())
        .when(transient)
        .notify(|e, after| retried(metrics, event, e, after))
        .await
}

fn retried(metrics: &AgentMetrics, event: &Event, e: &LeaseError, after: Duration) {
    metrics.event_send_retries.inc();
    warn!(
        run = %event.run,
        task = %event.task,
        rule = %event.rule,
        agent = %event.agent,
        epoch = %event.epoch,
        seq = event.seq,
        kind = event.body.kind(),
        error = %e,
        retry_in_ms = after.as_millis() as u64,
        "event send failed, retrying"
    );
}
