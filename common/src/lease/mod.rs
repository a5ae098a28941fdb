//! The lease protocol (DESIGN L1–L7): Lua scripts that run atomically inside
//! Redis on Redis time, and the typed client both sides call them through.
//!
//! Task states in Redis: `queued` → `leased` → `done`, with `leased` →
//! `queued` on release or reclaim, `leased` → `dead` when the lease-loss
//! budget is spent, and `held` → `queued` when an ordering group shrinks.

mod client;
mod error;
mod scripts;

pub use client::{Completion, Lease, LeaseClient, QueueDepth, QueuedTask, ReapReport, Renewal};
pub use error::LeaseError;
