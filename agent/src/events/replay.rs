//! Replay of delivered events after Redis lost them (DESIGN E2, L6).
//!
//! An event counts as delivered once XADD returns, but the coordinator
//! ingests it a little later. If Redis restarts empty in between, the entry
//! is gone and the agent's seq sequence in Postgres would have a hole. So
//! the sender keeps what it delivered recently in a [`ReplayBuffer`] and
//! watches the epoch generation key (one GET a second). The coordinator
//! re-installs a higher generation when it rebuilds an empty Redis (L1, L6),
//! so a generation other than the one last seen means "Redis may have lost
//! entries": the sender then appends every kept event again, in seq order.
//! The ingester applies each event id once, so a replay of what was already
//! ingested is a no-op.
//!
//! A completion is replayed as rejected ([`RejectReason::Unconfirmed`]):
//! the complete script accepted it atomically with its stream entry; if
//! that entry was lost, so was the acceptance, and the task was rebuilt as
//! pending and will be leased again. The replay then only fills the seq
//! hole and is never counted. If the accepted entry was ingested after all,
//! the replay has the same event id and dedupes to it.
//!
//! Memory is bounded: an event is kept until a generation check made at
//! least [`REPLAY_WINDOW`] after its delivery found Redis unchanged (the
//! ingester had that long to take it; while Redis is unreachable nothing is
//! confirmed, so nothing ages out), and never more than [`REPLAY_MAX_EVENTS`]
//! events or [`REPLAY_MAX_BYTES`] of event JSON; past either cap the oldest
//! go first (logged).

use std::collections::VecDeque;
use std::time::Duration;

use fleet_common::event::{Event, EventBody, RejectReason};
use tokio::time::Instant;
use tracing::warn;

/// How long after delivery an event is kept for replay, counted in Redis
/// time confirmed unchanged.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(120);
/// At most this many events are kept.
pub const REPLAY_MAX_EVENTS: usize = 20_000;
/// At most this much event JSON is kept (scripts make events large).
pub const REPLAY_MAX_BYTES: usize = 32 * 1024 * 1024;
/// How often the sender reads the generation key.
pub const GENERATION_CHECK_EVERY: Duration = Duration::from_secs(1);

struct Kept {
    delivered: Instant,
    bytes: usize,
    event: Event,
}

/// Delivered events, oldest first (= seq order: the sender delivers in seq
/// order).
pub struct ReplayBuffer {
    window: Duration,
    max_events: usize,
    max_bytes: usize,
    kept: VecDeque<Kept>,
    bytes: usize,
    /// The generation Redis answered last (`None`: not seen yet).
    generation: Option<u64>,
}

impl Default for ReplayBuffer {
    fn default() -> Self {
        Self::new(REPLAY_WINDOW, REPLAY_MAX_EVENTS, REPLAY_MAX_BYTES)
    }
}

impl ReplayBuffer {
    pub fn new(window: Duration, max_events: usize, max_bytes: usize) -> Self {
        Self {
            window,
            max_events,
            max_bytes,
            kept: VecDeque::new(),
            bytes: 0,
            generation: None,
        }
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Keeps `event`, delivered at `now`, dropping the oldest past the caps.
    pub fn delivered(&mut self, now: Instant, event: Event) {
        let bytes = event.to_json().len();
        self.bytes += bytes;
        self.kept.push_back(Kept {
            delivered: now,
            bytes,
            event,
        });
        let mut dropped = 0;
        while self.kept.len() > self.max_events || self.bytes > self.max_bytes {
            let Some(old) = self.kept.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            dropped += 1;
        }
        if dropped > 0 {
            warn!(
                dropped,
                kept = self.kept.len(),
                "replay buffer full: oldest delivered events no longer replayable"
            );
        }
    }

    /// Records the generation Redis answered at `now` (`None`: the key is
    /// missing, Redis not rebuilt yet). Returns the events to append again,
    /// in seq order, each with the rejection to carry, when the generation
    /// differs from the last one seen; otherwise nothing, and events
    /// confirmed for a whole window are let go.
    pub fn generation_seen(
        &mut self,
        now: Instant,
        generation: Option<u64>,
    ) -> Vec<(Event, Option<RejectReason>)> {
        let Some(g) = generation else {
            // Lost or not yet rebuilt: confirm nothing, remember the old
            // generation so that the rebuilt one shows as a change.
            return Vec::new();
        };
        match self.generation.replace(g) {
            Some(old) if old != g => self.replay(),
            Some(_) => {
                while let Some(k) = self.kept.front() {
                    if k.delivered + self.window > now {
                        break;
                    }
                    self.bytes -= k.bytes;
                    self.kept.pop_front();
                }
                Vec::new()
            }
            // The first look: nothing delivered before it can be judged;
            // keep everything until a later check confirms or replays.
            None => Vec::new(),
        }
    }

    /// Every kept event in seq order; completions as unconfirmed.
    fn replay(&self) -> Vec<(Event, Option<RejectReason>)> {
        self.kept
            .iter()
            .map(|k| {
                let rejected = matches!(k.event.body, EventBody::TaskCompleted { .. })
                    .then_some(RejectReason::Unconfirmed);
                (k.event.clone(), rejected)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use fleet_common::event::EVENT_VERSION;
    use fleet_common::{AgentId, Epoch, EventId, Outcome, RunId, TaskId};

    use super::*;

    fn event(seq: u64, body: EventBody) -> Event {
        Event {
            v: EVENT_VERSION,
            id: EventId::new_v7(),
            run: RunId(1),
            task: TaskId(2),
            rule: "r".into(),
            agent: AgentId("agent-1".into()),
            incarnation: 1,
            epoch: Epoch(1),
            attempt: 0,
            seq,
            ts_ms: 0,
            body,
        }
    }

    fn started(seq: u64) -> Event {
        event(seq, EventBody::AttemptStarted)
    }

    fn seqs(v: &[(Event, Option<RejectReason>)]) -> Vec<u64> {
        v.iter().map(|(e, _)| e.seq).collect()
    }

    #[test]
    fn a_new_generation_replays_everything_kept_in_seq_order() {
        let t0 = Instant::now();
        let mut b = ReplayBuffer::default();
        assert!(b.generation_seen(t0, Some(5)).is_empty());
        for seq in 1..=4 {
            b.delivered(t0, started(seq));
        }
        assert!(b.generation_seen(t0, Some(5)).is_empty(), "same generation");
        assert!(b.generation_seen(t0, None).is_empty(), "missing: wait");
        let again = b.generation_seen(t0, Some(6));
        assert_eq!(seqs(&again), vec![1, 2, 3, 4]);
        assert!(again.iter().all(|(_, r)| r.is_none()));
        // Kept for a further loss; the new generation is now the one seen.
        assert_eq!(b.len(), 4);
        assert!(b.generation_seen(t0, Some(6)).is_empty());
    }

    #[test]
    fn a_completion_is_replayed_as_unconfirmed() {
        let t0 = Instant::now();
        let mut b = ReplayBuffer::default();
        b.generation_seen(t0, Some(1));
        b.delivered(t0, started(1));
        let done = event(
            2,
            EventBody::TaskCompleted {
                outcome: Outcome::Fixed { attempt: 1 },
                attempts: 1,
                duration_ms: 1,
            },
        );
        b.delivered(t0, done.clone());
        let again = b.generation_seen(t0, Some(2));
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].1, None);
        assert_eq!(again[1], (done, Some(RejectReason::Unconfirmed)));
    }

    #[test]
    fn events_age_out_only_once_confirmed_a_window_after_delivery() {
        let t0 = Instant::now();
        let window = Duration::from_secs(120);
        let mut b = ReplayBuffer::new(window, 100, usize::MAX);
        b.generation_seen(t0, Some(1));
        b.delivered(t0, started(1));
        b.delivered(t0 + Duration::from_secs(60), started(2));
        // Redis unreachable or empty for long: nothing is let go.
        b.generation_seen(t0 + Duration::from_secs(600), None);
        assert_eq!(b.len(), 2);
        b.generation_seen(t0 + Duration::from_secs(130), Some(1));
        assert_eq!(b.len(), 1, "the first is confirmed a window later");
        b.generation_seen(t0 + Duration::from_secs(200), Some(1));
        assert!(b.is_empty());
    }

    #[test]
    fn the_buffer_is_bounded_by_count_and_bytes_dropping_the_oldest() {
        let t0 = Instant::now();
        let mut b = ReplayBuffer::new(Duration::from_secs(120), 3, usize::MAX);
        for seq in 1..=10 {
            b.delivered(t0, started(seq));
        }
        assert_eq!(b.len(), 3);
        b.generation = Some(1);
        assert_eq!(seqs(&b.generation_seen(t0, Some(2))), vec![8, 9, 10]);

        let one = started(1).to_json().len();
        let mut b = ReplayBuffer::new(Duration::from_secs(120), 100, one * 2 + one / 2);
        for seq in 1..=5 {
            b.delivered(t0, started(seq));
        }
        assert_eq!(b.len(), 2);
        assert!(b.bytes <= one * 2 + one / 2);
    }
}
