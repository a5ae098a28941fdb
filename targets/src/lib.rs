//! Machines that scripts run on (DESIGN T1–T6): a Docker container target
//! and an SSH target reached through a sandbox container. Worker scripts
//! never run on the agent's host; only the operator's SSH revert command
//! does.
//!
//! Depends on no other fleet crate; the agent wraps these types in its
//! `Target` trait.
//!
//! # Layout
//!
//! - `docker/`: the container target — `config.rs` (`DockerTargetConfig`,
//!   names and labels), `container.rs` (create, start, remove, limits),
//!   `exec.rs` (one script: output cap, timeout, killing its process tree),
//!   `archive.rs` (files in and out as tar), `baseline.rs` (commit and
//!   revert), `orphans.rs` (what an earlier incarnation left behind),
//!   `mod.rs` (`DockerTarget`).
//! - `ssh/`: the VM target — `config.rs` (`SshTargetConfig`),
//!   `command.rs` (ssh argv and remote commands), `mod.rs` (`SshTarget`:
//!   sandbox, exec, read_file, revert command).
//! - `output.rs`: `ExecOutcome` and the capped output buffer.
//! - `error.rs`: `TargetError`.

mod docker;
mod error;
mod output;
mod ssh;

pub use docker::{
    cleanup_orphans, DockerTarget, DockerTargetConfig, BASELINE_REPO, LABEL_AGENT, LABEL_ROLE,
    LABEL_SLOT,
};
pub use error::TargetError;
pub use output::{ExecOutcome, DEFAULT_OUTPUT_CAP};
pub use ssh::{SshTarget, SshTargetConfig};

/// Connects to the local Docker engine (socket or `DOCKER_HOST`).
pub fn connect_docker() -> Result<bollard::Docker, TargetError> {
    Ok(bollard::Docker::connect_with_local_defaults()?)
}

pub use bollard::Docker;
