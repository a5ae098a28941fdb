//! Typed identifiers. Each is a thin newtype so a task id can never be passed
//! where a run id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A run: one submission of a skill pack, profile and rule selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

/// A task: one rule of one run (a `work_items` row in Postgres).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub i64);

/// A lease grant's fencing token. Strictly increasing per task across every
/// grant, including across a Redis that lost its data (DESIGN L1): the high
/// bits are the Postgres-held generation, the low bits count grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Grants per task per generation; the generation lives above these bits.
    /// Kept at 2^20 so `generation << 20 | grants` stays exact in Lua's
    /// doubles (2^53) for any generation below 2^33.
    pub const GRANT_BITS: u32 = 20;

    pub fn generation(self) -> u64 {
        self.0 >> Self::GRANT_BITS
    }
}

/// An agent's stable name (e.g. `agent-3`, or the host name). Restarts of the
/// same agent keep the id and get a new incarnation number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub String);

impl AgentId {
    /// Agent ids end up in Redis keys, git ref names and metric labels, so
    /// they are restricted to a conservative alphabet.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "agent id {s:?} must be 1-64 characters of [A-Za-z0-9._-]"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of one event; delivery is at-least-once and the ingester applies
/// each id once (DESIGN E2). Agents use UUIDv7 strings; events made inside
/// Lua scripts use a deterministic `kind-task-epoch` form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub String);

impl EventId {
    pub fn new_v7() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(RunId, TaskId, Epoch, AgentId, EventId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_rejects_key_and_ref_breaking_characters() {
        assert!(AgentId::parse("agent-1.host_a").is_ok());
        for bad in ["", "a b", "a/b", "a:b", "a*", &"x".repeat(65)] {
            assert!(AgentId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn epoch_generation_is_the_high_bits() {
        let e = Epoch((7 << Epoch::GRANT_BITS) | 3);
        assert_eq!(e.generation(), 7);
    }
}
