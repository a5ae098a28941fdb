//! The Redis key schema. Every key of one fleet lives under one prefix, so
//! tests run side by side on one Redis and an ACL can confine agents to it.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}gen` | string | epoch generation from Postgres; absent = not reconciled |
//! | `{p}ready` | zset | task id → queue score (lower leases first) |
//! | `{p}ready:vm` | zset | the same, for tasks only a VM can serve (issue 24) |
//! | `{p}leases` | zset | task id → lease deadline (Redis ms) |
//! | `{p}t:{task}` | hash | one task: state, epoch, holder, payload, … |
//! | `{p}held:{group}` | zset | task id → release threshold for that group |
//! | `{p}grp:{group}` | string | unfinished members of an ordering group |
//! | `{p}events` | stream | events from agents and scripts |
//! | `{p}stats` | hash | protocol counters (granted, stale_rejected, …) |
//! | `{p}agents` | zset | agent id → last seen (Redis ms) |
//! | `{p}agents:vm` | zset | the same, for agents whose targets are VMs |
//! | `{p}incarnation:{agent}` | string | starts of that agent, for event seqs |

use crate::ids::{AgentId, TaskId};

/// Consumer group the coordinator's ingester reads the event stream with.
pub const INGEST_GROUP: &str = "ingest";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    /// `prefix` should end with `:`; the default fleet uses `fleet:`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{}", self.prefix, suffix)
    }

    pub fn generation(&self) -> String {
        self.key("gen")
    }
    pub fn ready(&self) -> String {
        self.key("ready")
    }
    /// The ready set of tasks that need a VM target: leased only by agents
    /// whose targets are VMs.
    pub fn ready_vm(&self) -> String {
        self.key("ready:vm")
    }
    pub fn leases(&self) -> String {
        self.key("leases")
    }
    pub fn task(&self, task: TaskId) -> String {
        self.key(&format!("t:{task}"))
    }
    pub fn events(&self) -> String {
        self.key("events")
    }
    pub fn stats(&self) -> String {
        self.key("stats")
    }
    pub fn agents(&self) -> String {
        self.key("agents")
    }
    /// Presence of the agents whose targets are VMs (also in `agents`).
    pub fn agents_vm(&self) -> String {
        self.key("agents:vm")
    }
    pub fn incarnation(&self, agent: &AgentId) -> String {
        self.key(&format!("incarnation:{agent}"))
    }
}
