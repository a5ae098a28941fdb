//! The agent's resolved settings, whatever they came from (flags, env, or
//! the coordinator's registration answer).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fleet_common::settings::LeaseSettings;
use fleet_common::AgentId;

/// Where the agent learns its Redis and lease timing.
#[derive(Clone)]
pub enum Connection {
    /// Register with the coordinator, which answers with both.
    Coordinator { url: String, token: String },
    /// Straight to Redis (tests, benches), lease timing at its defaults.
    Direct {
        redis_url: String,
        key_prefix: String,
        lease: LeaseSettings,
    },
}

impl std::fmt::Debug for Connection {
    // The token and Redis credentials never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Coordinator { url, .. } => f
                .debug_struct("Coordinator")
                .field("url", url)
                .field("token", &"<redacted>")
                .finish(),
            Self::Direct {
                redis_url,
                key_prefix,
                lease,
            } => f
                .debug_struct("Direct")
                .field("redis_url", &fleet_common::redact::redact_url(redis_url))
                .field("key_prefix", key_prefix)
                .field("lease", lease)
                .finish(),
        }
    }
}

/// Which Worker writes the scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrainKind {
    /// Deterministic simulated brain (needs `--target sim`).
    Sim,
    /// The SCAP content's own bash fix for the rule, generated on the
    /// target (needs a real target).
    Ssg,
    /// An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's
    /// server, Ollama; needs a real target).
    Openai,
}

/// What the scripts run on; the Evaluator follows (sim or OpenSCAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// In-memory simulation; nothing runs anywhere.
    Sim,
    /// A container per slot from the target image (DESIGN T1, T5).
    Docker,
    /// A VM over SSH, through a sandbox container (DESIGN T6).
    Ssh,
    /// A qemu VM per slot from `make vm-image`, owned by the agent and
    /// reverted by `loadvm` (issue 24).
    Qemu,
}

impl TargetKind {
    /// What rules this target can reach: only VMs hold kernel values and
    /// services.
    pub fn class(self) -> fleet_common::TargetClass {
        match self {
            Self::Sim | Self::Docker => fleet_common::TargetClass::Container,
            Self::Ssh | Self::Qemu => fleet_common::TargetClass::Vm,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TargetSettings {
    pub kind: TargetKind,
    /// Docker targets: image, CPUs, memory and process limits.
    pub image: String,
    pub cpus: f64,
    pub memory_mb: u64,
    pub pids: i64,
    /// SSH targets: TOML file with the `SshTargetConfig` fields.
    pub ssh_config: Option<PathBuf>,
    /// The SSH sandbox's image for inventory hosts (harden tasks) and
    /// qemu targets.
    pub sandbox_image: String,
    /// qemu targets: `make vm-image`'s output.
    pub vm_image_dir: PathBuf,
    /// qemu targets: guest memory, MiB, and CPUs.
    pub vm_memory_mb: u32,
    pub vm_cpus: u32,
    pub vm_accel: fleet_targets::AccelChoice,
}

impl Default for TargetSettings {
    fn default() -> Self {
        Self {
            kind: TargetKind::Sim,
            image: "fleet-target:bullseye".into(),
            cpus: 1.0,
            memory_mb: 512,
            pids: 256,
            ssh_config: None,
            sandbox_image: "fleet-sandbox:bullseye".into(),
            vm_image_dir: PathBuf::from(".fleet/vm-image"),
            vm_memory_mb: 1024,
            vm_cpus: 1,
            vm_accel: fleet_targets::AccelChoice::Auto,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub agent: AgentId,
    pub connection: Connection,
    pub brain: BrainKind,
    pub target: TargetSettings,
    /// The endpoint of the `openai` brain.
    pub llm: crate::llm::LlmSettings,
    /// Simulated work per attempt (sim brain only).
    pub sim_work: Duration,
    /// Stop after this many completed leases; `None`: run until shutdown.
    pub max_leases: Option<u64>,
    pub metrics_listen: Option<SocketAddr>,
    /// Leases worked at once, each on its own target (DESIGN T2).
    pub slots: usize,
    /// The agent's cache of the knowledge repo (used only when the
    /// coordinator serves one); `None`: `.fleet/agents/<agent-id>`.
    pub work_dir: Option<PathBuf>,
    /// How long a lease keeps trying to reach the knowledge repo (fetch,
    /// push) while the coordinator that serves it is away.
    pub knowledge_patience: Duration,
}

/// This machine's host name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".to_owned())
}
