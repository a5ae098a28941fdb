//! The one task that writes events to Redis, strictly in seq order, and
//! appends them again when Redis comes back without them (`replay.rs`).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use fleet_common::event::{Event, RejectReason};
use fleet_common::lease::{Completion, Lease, LeaseClient, LeaseError};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::replay::{ReplayBuffer, GENERATION_CHECK_EVERY};
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
    replay: bool,
) {
    let mut kept = ReplayBuffer::default();
    let mut check = tokio::time::interval(GENERATION_CHECK_EVERY);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = check.tick(), if replay => {
                let again = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    n = check_generation(&client, &mut kept, &metrics) => n,
                };
                if again > 0 {
                    info!(replayed = again, "redis came back with a new generation: delivered events appended again");
                }
                continue;
            }
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        let seq = item.seq();
        let delivered = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            ok = deliver(&client, item, &metrics) => ok,
        };
        if let Some(event) = delivered {
            metrics.events_sent.inc();
            acked.send_replace(seq);
            if replay {
                kept.delivered(Instant::now(), event);
            }
        }
    }
}

/// Reads the generation (one GET; an error waits for the next tick) and,
/// when it changed, appends every kept event again. Returns how many.
async fn check_generation(
    client: &LeaseClient,
    kept: &mut ReplayBuffer,
    metrics: &AgentMetrics,
) -> usize {
    let Ok(generation) = client.generation().await else {
        return 0;
    };
    let again = kept.generation_seen(Instant::now(), generation);
    for (event, rejected) in &again {
        let r = (|| reappend(client, event, *rejected))
            .retry(backoff())
            .when(transient)
            .notify(|e, after| retried(metrics, event, e, after))
            .await;
        match r {
            Ok(()) => metrics.events_replayed.inc(),
            Err(e) => warn!(seq = event.seq, error = %e, "event could not be replayed"),
        }
    }
    again.len()
}

async fn reappend(
    client: &LeaseClient,
    event: &Event,
    rejected: Option<RejectReason>,
) -> Result<(), LeaseError> {
    match rejected {
        Some(reason) => client.append_rejected(event, reason).await,
        None => client.append_event(event).await,
    }
}

/// The event, when the stream now holds it.
async fn deliver(client: &LeaseClient, item: Outgoing, metrics: &AgentMetrics) -> Option<Event> {
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
            r.ok().map(|()| event)
        }
        Outgoing::Complete {
            lease,
            event,
            reply,
        } => {
            let r = complete(client, &lease, &event, metrics).await;
            let ok = r.is_ok();
            let _ = reply.send(r);
            ok.then_some(event)
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
