//! Test support for the fleet's integration, end-to-end and chaos tests, and
//! the `fleet-bench` driver.
//!
//! Every test gets its own Redis key prefix and Postgres schema, so tests run
//! in parallel against the one Redis and Postgres that `make deps` starts.
//! A missing service is a test failure, never a skip.
//!
//! # Layout
//!
//! - [`services`]: where Redis and Postgres are, and the check that they answer.
//! - [`queue`]: a `LeaseClient` on a fresh key prefix, plus fixtures.
//! - [`db`]: a Postgres pool on a fresh, migrated schema.
//! - [`fake_llm`]: the scripted OpenAI-compatible endpoint (real HTTP).
//! - [`procs`]: starting and signalling the real binaries.
//! - [`api`]: the coordinator's HTTP API as harnesses call it.
//! - [`private_redis`]: a redis-server of a test's own, to restart.
//! - [`hosts`]: agents in containers on a private network, and the faults
//!   of `make chaos-hosts`.
//! - [`prometheus`]: a real Prometheus with the shipped config, and queries.
//! - [`security`]: hostile inputs for `make security` (text, access).
//! - [`bench_target`]: revert, exec and rule-evaluation costs on a Docker target.
//! - [`bench_harden`]: a rollout to 8 sshd hosts by 2 agents against one host alone.
//! - [`ssh_hosts`]: inventory hosts (sshd containers on an internal network).
//! - [`bench_fixrate`]: the `ssg` brain's fix rate against `oscap --remediate`.
//! - [`security_sandbox`]: attacks a Worker script might make, each checked
//!   contained on a real Docker target (`make security`).
//! - [`loadgen`]: simulated agents on the real lease protocol and event
//!   stream, for `fleet-bench scale`.
//! - [`bench_scale`]: tasks/s by fleet size, Redis bytes per task, and the
//!   coordinator's memory, against the real coordinator process.
//! - [`bench_ingest`]: the ingester against `psql \copy` of the same rows.
//! - [`export`]: a fresh Docker target to scan chosen rules on and apply a
//!   bundle's exports to (bash through its exec, Ansible through `docker
//!   exec`).
//! - [`bench_learning`]: category-level credit against the dream stage's, in
//!   a simulated campaign (in process, no services).

pub mod api;
pub mod bench_dream;
pub mod bench_fixrate;
pub mod bench_harden;
pub mod bench_ingest;
pub mod bench_learning;
pub mod bench_scale;
pub mod bench_target;
pub mod bench_vm;
pub mod chaos;
pub mod coord;
pub mod db;
pub mod export;
pub mod fake_llm;
pub mod fleet;
pub mod hosts;
pub mod loadgen;
pub mod private_redis;
pub mod procs;
pub mod prometheus;
pub mod queue;
pub mod security;
pub mod security_sandbox;
pub mod services;
pub mod ssh_hosts;
