//! Machines that scripts run on (DESIGN T1–T6): a Docker container target,
//! an SSH target reached through a sandbox container, and a qemu VM target
//! reached the same way. Worker scripts
//! never run on the agent's host; only the operator's SSH revert command
//! does.
//!
//! Depends on no other fleet crate; the agent wraps these types in its
//! `Target` trait.
//!
//! # Layout
//!
//! - `docker/`: the container target — `config.rs` (`DockerTargetConfig`,
//!   names and labels), `container.rs` (create, start, remove, limits,
//!   the capabilities kept),
//!   `exec.rs` (one script: output cap, timeout, killing its process tree),
//!   `limits.rs` (what the limits did to a script, from its cgroup),
//!   `archive.rs` (files in and out as tar), `baseline.rs` (commit and
//!   revert), `orphans.rs` (what an earlier incarnation left behind),
//!   `mod.rs` (`DockerTarget`).
//! - `ssh/`: the VM target — `config.rs` (`SshTargetConfig`),
//!   `command.rs` (ssh argv and remote commands), `mod.rs` (`SshTarget`:
//!   sandbox, exec, read_file, revert command).
//! - `qemu/`: the qemu VM target — `config.rs` (`QemuTargetConfig`),
//!   `accel.rs` (KVM or TCG), `vm.rs` (one qemu process in its sandbox's
//!   namespaces, overlays, strays), `qmp.rs` (`Qmp`: the QEMU Machine
//!   Protocol; `savevm`/`loadvm`), `mod.rs` (`QemuTarget`).
//! - `output.rs`: `ExecOutcome` and the capped output buffer.
//! - `error.rs`: `TargetError`.

mod docker;
mod error;
mod output;
mod qemu;
mod ssh;

pub use docker::{
    cleanup_orphans, kept_capability_mask, DockerTarget, DockerTargetConfig, BASELINE_REPO,
    KEPT_CAPABILITIES, LABEL_AGENT, LABEL_ROLE, LABEL_SLOT,
};
pub use error::TargetError;
pub use output::{ExecOutcome, DEFAULT_OUTPUT_CAP};
pub use qemu::{Accel, AccelChoice, QemuTarget, QemuTargetConfig, Qmp};
pub use ssh::{run_operator_command, SshTarget, SshTargetConfig};

/// Connects to the local Docker engine (socket or `DOCKER_HOST`).
pub fn connect_docker() -> Result<bollard::Docker, TargetError> {
    Ok(bollard::Docker::connect_with_local_defaults()?)
}

pub use bollard::Docker;

/// The agent boxes these futures as `Send` behind its `Target` trait.
#[cfg(test)]
mod send_check {
    use std::time::Duration;

    use super::{DockerTarget, QemuTarget, SshTarget};

    fn send<T: Send>(_: T) {}

    #[allow(dead_code)]
    fn target_futures_are_send(docker: &DockerTarget, ssh: &SshTarget, qemu: &QemuTarget) {
        send(qemu.baseline());
        send(qemu.exec("", Duration::ZERO));
        send(qemu.revert());
        send(qemu.health());
        send(qemu.read_file("", 0));
        send(qemu.remove());
        send(docker.baseline());
        send(docker.exec("", Duration::ZERO));
        send(docker.revert());
        send(docker.health());
        send(docker.read_file("", 0));
        send(docker.write_file("", b""));
        send(docker.remove());
        send(ssh.baseline());
        send(ssh.exec("", Duration::ZERO));
        send(ssh.revert());
        send(ssh.health());
        send(ssh.read_file("", 0));
        send(ssh.remove());
    }

    #[test]
    fn targets_are_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<DockerTarget>();
        both::<SshTarget>();
        both::<QemuTarget>();
    }
}
