//! The fleet agent: leases SCAP rule tasks from Redis, keeps each lease
//! alive, remediates the rule on its own target with a Worker → Evaluator
//! loop, and streams typed events back (DESIGN L1–L7, E1–E4).
//!
//! # Layout
//!
//! - [`workbench`]: the `Brain`, `Target` and `Evaluator` traits a slot
//!   works with, bundled as a `Workbench`.
//! - [`sim`]: a deterministic in-memory workbench; outcomes predicted by
//!   [`sim::expected_outcome`].
//! - [`scap`]: real machines — Docker and SSH targets, the OpenSCAP
//!   Evaluator and the `ssg` brain, all running on the target.
//! - [`llm`]: the `openai` brain — a chat-completions client with retries
//!   and a concurrency limit, and script extraction from answers.
//! - [`remediation`]: the per-rule attempt loop, health checks and prompt
//!   assembly.
//! - [`events`]: `EventSink`, which stamps envelopes and seqs and feeds the
//!   one ordered sender to the Redis stream; completion goes through it.
//! - [`heartbeat`]: renews one lease and fires `lost` (DESIGN L2, L4).
//! - [`runner`]: the lease loop per slot; how a lease ends.
//! - [`knowledge`]: the knowledge repo cache and the per-lease worktree
//!   (fetch, attempts, result, push), when the coordinator serves one.
//! - [`presence`], [`registration`]: being seen by, and joining, the fleet.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint.
//! - [`daemon`]: wiring and ordered shutdown of one agent process.
//! - [`cli`], [`settings`], [`logging`], [`signals`]: process plumbing.
//! - [`error`]: `AgentError`, the crate's one error type.

pub mod cli;
pub mod daemon;
pub mod error;
pub mod events;
pub mod heartbeat;
pub mod hosts;
pub mod knowledge;
pub mod llm;
pub mod logging;
pub mod metrics;
pub mod presence;
pub mod registration;
pub mod remediation;
pub mod runner;
pub mod scap;
pub mod settings;
pub mod signals;
pub mod sim;
mod spawn;
pub mod workbench;

pub use error::AgentError;
