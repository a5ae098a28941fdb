//! Events out of the agent (DESIGN E1, E2). [`EventSink`] stamps each event
//! with its envelope and a per-incarnation `seq` (1, 2, … with no gaps), and
//! hands it to one background sender that appends to the Redis stream in
//! seq order, retrying until it succeeds (or the close deadline passes).
//!
//! The completion event is special: it is appended by the complete script,
//! atomically with acceptance (DESIGN L3). It takes the next seq and goes
//! through the same ordered sender, so every earlier event is in the stream
//! before it, and no later one can be, whatever slot emitted it.
//!
//! Delivered events are kept for a while and appended again when Redis
//! comes back without them (`replay.rs`).

mod replay;
mod sender;

pub use replay::{
    ReplayBuffer, GENERATION_CHECK_EVERY, REPLAY_MAX_BYTES, REPLAY_MAX_EVENTS, REPLAY_WINDOW,
};

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_common::event::{Event, EventBody, EVENT_VERSION};
use fleet_common::lease::{Completion, Lease, LeaseClient, LeaseError};
use fleet_common::{AgentId, EventId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::error::AgentError;
use crate::metrics::AgentMetrics;
use crate::spawn::spawn;

/// What the sender is asked to deliver, in seq order.
pub(crate) enum Outgoing {
    Append(Event),
    Complete {
        /// Boxed: a lease carries its whole task, far larger than an event.
        lease: Box<Lease>,
        event: Event,
        reply: oneshot::Sender<Result<Completion, LeaseError>>,
    },
}

impl Outgoing {
    fn seq(&self) -> u64 {
        match self {
            Self::Append(e) | Self::Complete { event: e, .. } => e.seq,
        }
    }
}

struct SeqState {
    next_seq: u64,
    /// `None` once closed. The queue is unbounded, but only for as long as
    /// Redis is unreachable, which ends every lease within its TTL.
    tx: Option<mpsc::UnboundedSender<Outgoing>>,
}

struct Shared {
    agent: AgentId,
    incarnation: u32,
    state: Mutex<SeqState>,
    /// Highest seq the stream has acknowledged.
    acked: watch::Receiver<u64>,
    sender: Mutex<Option<(JoinHandle<()>, CancellationToken)>>,
}

/// Cheap to clone; every clone feeds the same ordered sender.
#[derive(Clone)]
pub struct EventSink {
    shared: Arc<Shared>,
}

impl EventSink {
    /// Starts the background sender appending to `client`'s stream, which
    /// replays delivered events when Redis comes back without them.
    pub fn start(
        client: LeaseClient,
        agent: AgentId,
        incarnation: u32,
        metrics: AgentMetrics,
    ) -> Self {
        Self::start_with_replay(client, agent, incarnation, metrics, !replay_disabled())
    }

    /// [`EventSink::start`]; `replay: false` only for tests that show what
    /// a Redis loss does without it.
    pub fn start_with_replay(
        client: LeaseClient,
        agent: AgentId,
        incarnation: u32,
        metrics: AgentMetrics,
        replay: bool,
    ) -> Self {
        if !replay {
            warn!("event replay disabled: a Redis that restarts empty loses undelivered events");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (acked_tx, acked) = watch::channel(0);
        let stop = CancellationToken::new();
        let handle = spawn(
            "event-sender",
            sender::run(client, rx, acked_tx, metrics, stop.clone(), replay),
        );
        Self::with_sender(agent, incarnation, tx, acked, Some((handle, stop)))
    }

    /// A sink that delivers into a channel instead of Redis and accepts
    /// every completion: for tests of code that emits events.
    pub fn in_memory(agent: AgentId, incarnation: u32) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (acked_tx, acked) = watch::channel(0);
        let handle = spawn("event-memory", async move {
            while let Some(item) = rx.recv().await {
                let seq = item.seq();
                match item {
                    Outgoing::Append(e) => {
                        let _ = out_tx.send(e);
                    }
                    Outgoing::Complete { event, reply, .. } => {
                        let _ = out_tx.send(event);
                        let _ = reply.send(Ok(Completion::Accepted));
                    }
                }
                acked_tx.send_replace(seq);
            }
        });
        let sink = Self::with_sender(
            agent,
            incarnation,
            tx,
            acked,
            Some((handle, CancellationToken::new())),
        );
        (sink, out_rx)
    }

    fn with_sender(
        agent: AgentId,
        incarnation: u32,
        tx: mpsc::UnboundedSender<Outgoing>,
        acked: watch::Receiver<u64>,
        sender: Option<(JoinHandle<()>, CancellationToken)>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                agent,
                incarnation,
                state: Mutex::new(SeqState {
                    next_seq: 1,
                    tx: Some(tx),
                }),
                acked,
                sender: Mutex::new(sender),
            }),
        }
    }

    pub fn agent(&self) -> &AgentId {
        &self.shared.agent
    }

    pub fn incarnation(&self) -> u32 {
        self.shared.incarnation
    }

    /// Events about one lease.
    pub fn for_lease(&self, lease: &Lease) -> LeaseEvents {
        LeaseEvents {
            sink: self.clone(),
            lease: lease.clone(),
        }
    }

    /// Takes the next seq and queues what `make` builds with it, in one step
    /// under the lock so seq order is queue order. A seq is only consumed
    /// when the item was queued, so a closed sink leaves no gap.
    fn enqueue(
        &self,
        lease: &Lease,
        attempt: u32,
        body: EventBody,
        wrap: impl FnOnce(Event) -> Outgoing,
    ) -> Option<u64> {
        let mut st = self.shared.state.lock().expect("event sink lock");
        let seq = st.next_seq;
        let kind = body.kind();
        let event = Event {
            v: EVENT_VERSION,
            id: EventId::new_v7(),
            run: lease.task.run,
            task: lease.task.task,
            rule: lease.task.rule.clone(),
            agent: self.shared.agent.clone(),
            incarnation: self.shared.incarnation,
            epoch: lease.epoch,
            attempt,
            seq,
            ts_ms: unix_ms(),
            body,
        };
        let tx = st.tx.as_ref()?;
        if tx.send(wrap(event)).is_err() {
            return None;
        }
        st.next_seq += 1;
        debug!(seq, kind, attempt, "event queued");
        Some(seq)
    }

    /// Waits until every event queued so far is acknowledged by Redis.
    pub async fn flush(&self) -> Result<(), AgentError> {
        let target = self.shared.state.lock().expect("event sink lock").next_seq - 1;
        let mut acked = self.shared.acked.clone();
        acked
            .wait_for(|&a| a >= target)
            .await
            .map_err(|_| AgentError::EventsClosed)?;
        Ok(())
    }

    /// Stops taking events and lets the sender drain for at most
    /// `deadline`; what is still queued then is dropped (and logged).
    pub async fn close(&self, deadline: Duration) {
        let last = {
            let mut st = self.shared.state.lock().expect("event sink lock");
            st.tx = None;
            st.next_seq - 1
        };
        let sender = self.shared.sender.lock().expect("event sink lock").take();
        let Some((mut handle, stop)) = sender else {
            return;
        };
        if tokio::time::timeout(deadline, &mut handle).await.is_err() {
            stop.cancel();
            let _ = handle.await;
        }
        let acked = *self.shared.acked.borrow();
        if acked < last {
            warn!(acked, last, "events left undelivered at shutdown");
        }
    }
}

/// An [`EventSink`] bound to one lease: stamps run, task, rule and epoch.
#[derive(Clone)]
pub struct LeaseEvents {
    sink: EventSink,
    lease: Lease,
}

impl LeaseEvents {
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn sink(&self) -> &EventSink {
        &self.sink
    }

    /// Queues one event; `attempt` is 1-based, 0 outside an attempt.
    pub fn emit(&self, attempt: u32, body: EventBody) {
        if self
            .sink
            .enqueue(&self.lease, attempt, body, Outgoing::Append)
            .is_none()
        {
            error!(attempt, "event sink closed: event dropped");
        }
    }

    /// Completes the lease with `body` (a `TaskCompleted`) as the next event
    /// in seq order; the sender retries transport errors (the call is
    /// idempotent). Call [`EventSink::flush`] first so that, if the process
    /// dies before the script runs, no later seq is in the stream either.
    pub async fn complete(&self, body: EventBody) -> Result<Completion, AgentError> {
        let (reply, answer) = oneshot::channel();
        let lease = self.lease.clone();
        self.sink
            .enqueue(&self.lease, 0, body, |event| Outgoing::Complete {
                lease: Box::new(lease),
                event,
                reply,
            })
            .ok_or(AgentError::EventsClosed)?;
        Ok(answer.await.map_err(|_| AgentError::EventsClosed)??)
    }
}

/// `FLEET_EVENT_REPLAY=off`: a test switch (the redis-loss test shows the
/// seq holes a Redis restart leaves without replay). On by default.
fn replay_disabled() -> bool {
    std::env::var("FLEET_EVENT_REPLAY").is_ok_and(|v| v == "off" || v == "0" || v == "false")
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
