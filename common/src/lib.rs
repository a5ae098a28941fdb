//! Shared vocabulary of the fleet: identifiers, rule tasks and outcomes, the
//! versioned event enum, the Redis key schema and the lease protocol.
//!
//! Both the coordinator and the agents depend on this crate; the agent never
//! depends on the coordinator, so everything that crosses the wire lives here.
//!
//! # Layout
//!
//! - [`ids`]: typed identifiers (`RunId`, `TaskId`, `AgentId`, `Epoch`, `EventId`).
//! - [`task`]: a leased `RuleTask`, its `Budgets`, and the `Outcome` of a task.
//! - [`event`]: the event envelope and `EventBody` enum (DESIGN E1, E3, E4).
//! - [`keys`]: the Redis key schema under one prefix.
//! - [`lesson`]: candidate lessons and bans from the Reflector.
//! - [`injection`]: the instruction-injection screen for text bound for a
//!   prompt or the knowledge repo (DESIGN D7).
//! - [`script_screen`]: the denylist of host-destroying commands a script
//!   passes before it runs or is promoted; ban pattern compilation.
//! - [`lease`]: Lua scripts and the `LeaseClient` (DESIGN L1–L7).
//! - [`settings`]: lease timing defaults and why they are what they are.
//! - [`skill_pack`]: family map and ordering constraints of a skill pack.
//! - [`bundle`]: the ordered bundle of verified skills (DESIGN H2).
//! - [`host`]: host jobs (compose, harden) and their reports (DESIGN H3–H5).
//! - [`target_class`]: `TargetClass` (container or vm), what a rule needs
//!   and an agent's targets are.
//! - [`api`]: HTTP request and response bodies of the coordinator API.

pub mod api;
pub mod bundle;
pub mod event;
pub mod host;
pub mod ids;
pub mod injection;
pub mod keys;
pub mod lease;
pub mod lesson;
pub mod redact;
pub mod script_screen;
pub mod settings;
pub mod skill_pack;
pub mod target_class;
pub mod task;

pub use event::{Event, EventBody};
pub use ids::{AgentId, Epoch, EventId, RunId, TaskId};
pub use target_class::TargetClass;
pub use task::{
    Budgets, Checks, EscalationReason, HealthCheck, Outcome, ReasonClass, RuleTask, RuleText,
};
