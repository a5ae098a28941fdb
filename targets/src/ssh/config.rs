//! What an SSH target is: a VM reached from a sandbox container, and the
//! operator's command that reverts it (DESIGN T6).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::output::DEFAULT_OUTPUT_CAP;

/// An SSH-reachable VM. Operator config except `agent_id` and `slot`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTargetConfig {
    /// Host name or address, as the sandbox resolves it.
    pub host: String,
    /// Default 22.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Default `root`.
    #[serde(default = "default_user")]
    pub user: String,
    /// Private key on the agent's host, copied into the sandbox (mode 600).
    pub private_key_path: PathBuf,
    /// known_hosts holding the target's host key; the key is checked
    /// (`StrictHostKeyChecking=yes`).
    pub known_hosts_path: PathBuf,
    /// Name the host key is filed under in known_hosts, when not `host`
    /// (ssh's `HostKeyAlias`; `make vm-image` files it as `fleet-vm`).
    #[serde(default)]
    pub host_key_alias: Option<String>,
    /// Run on the agent's host, not in the sandbox: operator config such as
    /// `["virsh", "snapshot-revert", "vm", "baseline"]`, never a worker
    /// script.
    pub revert_command: Vec<String>,
    /// Allow an empty `revert_command` (an inventory host without one: a
    /// revert then fails plainly instead of the target being refused).
    #[serde(default)]
    pub revert_optional: bool,
    /// Longest run of the revert command. Default 600 s.
    #[serde(default = "default_revert_timeout_secs")]
    pub revert_timeout_secs: u64,
    /// Longest wait for ssh to answer after a revert. Default 300 s.
    #[serde(default = "default_ready_timeout_secs")]
    pub ready_timeout_secs: u64,
    /// ssh `ConnectTimeout`. Default 10 s.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Image holding the ssh client. Default `fleet-sandbox:bullseye`.
    #[serde(default = "default_sandbox_image")]
    pub sandbox_image: String,
    /// Docker network the sandbox joins; it should reach only the target.
    /// `none`: no network at all (a qemu target's sandbox, whose guest
    /// listens on the sandbox's own loopback).
    pub network: String,
    /// Owning agent; `[A-Za-z0-9._-]{1,64}`.
    pub agent_id: String,
    /// The agent's slot this target serves.
    pub slot: u32,
    /// Sandbox CPUs. Default 0.5.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Sandbox memory limit. Default 128 MiB.
    #[serde(default = "default_memory_bytes")]
    pub memory_bytes: i64,
    /// Sandbox process limit. Default 64.
    #[serde(default = "default_pids_limit")]
    pub pids_limit: i64,
    /// Longest timeout an exec may ask for. Default 1800 s.
    #[serde(default = "default_max_exec_timeout_secs")]
    pub max_exec_timeout_secs: u64,
    /// Output bytes kept per exec. Default 16 KiB.
    #[serde(default = "default_output_cap")]
    pub output_cap_bytes: usize,
}

impl SshTargetConfig {
    /// A config with every default.
    pub fn new(
        host: impl Into<String>,
        private_key_path: impl Into<PathBuf>,
        known_hosts_path: impl Into<PathBuf>,
        revert_command: Vec<String>,
        network: impl Into<String>,
        agent_id: impl Into<String>,
        slot: u32,
    ) -> Self {
        SshTargetConfig {
            host: host.into(),
            port: default_port(),
            user: default_user(),
            private_key_path: private_key_path.into(),
            known_hosts_path: known_hosts_path.into(),
            host_key_alias: None,
            revert_command,
            revert_optional: false,
            revert_timeout_secs: default_revert_timeout_secs(),
            ready_timeout_secs: default_ready_timeout_secs(),
            connect_timeout_secs: default_connect_timeout_secs(),
            sandbox_image: default_sandbox_image(),
            network: network.into(),
            agent_id: agent_id.into(),
            slot,
            cpus: default_cpus(),
            memory_bytes: default_memory_bytes(),
            pids_limit: default_pids_limit(),
            max_exec_timeout_secs: default_max_exec_timeout_secs(),
            output_cap_bytes: default_output_cap(),
        }
    }

    pub fn sandbox_name(&self) -> String {
        format!("fleet-sandbox-{}-{}", self.agent_id, self.slot)
    }

    pub(crate) fn revert_timeout(&self) -> Duration {
        Duration::from_secs(self.revert_timeout_secs)
    }

    pub(crate) fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout_secs)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub(crate) fn max_exec_timeout(&self) -> Duration {
        Duration::from_secs(self.max_exec_timeout_secs)
    }
}

fn default_port() -> u16 {
    22
}

fn default_user() -> String {
    "root".to_string()
}

fn default_revert_timeout_secs() -> u64 {
    600
}

fn default_ready_timeout_secs() -> u64 {
    300
}

fn default_connect_timeout_secs() -> u64 {
    10
}

fn default_sandbox_image() -> String {
    "fleet-sandbox:bullseye".to_string()
}

fn default_cpus() -> f64 {
    0.5
}

fn default_memory_bytes() -> i64 {
    128 * 1024 * 1024
}

fn default_pids_limit() -> i64 {
    64
}

fn default_max_exec_timeout_secs() -> u64 {
    1800
}

fn default_output_cap() -> usize {
    DEFAULT_OUTPUT_CAP
}
