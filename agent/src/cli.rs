//! Command line of `fleet-agent`. Precedence: flag > environment variable >
//! default. With `--coordinator`, Redis and lease timing come from the
//! coordinator and `--redis-url`/`--key-prefix` are ignored.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fleet_common::settings::LeaseSettings;
use fleet_common::AgentId;

use crate::error::AgentError;
use crate::settings::{hostname, AgentSettings, BrainKind, Connection, TargetKind, TargetSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--vm-accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmAccel {
    Auto,
    Kvm,
    Tcg,
}

impl From<VmAccel> for fleet_targets::AccelChoice {
    fn from(accel: VmAccel) -> Self {
        match accel {
            VmAccel::Auto => Self::Auto,
            VmAccel::Kvm => Self::Kvm,
            VmAccel::Tcg => Self::Tcg,
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "fleet-agent",
    version,
    about = "Leases SCAP rule tasks and remediates them on its own target"
)]
pub struct Cli {
    /// Agent id, [A-Za-z0-9._-]{1,64}. Default: the host name.
    #[arg(long, env = "FLEET_AGENT_ID")]
    pub id: Option<String>,
    /// Coordinator base URL, e.g. http://127.0.0.1:8080. Supersedes
    /// --redis-url and --key-prefix.
    #[arg(long, env = "FLEET_COORDINATOR_URL")]
    pub coordinator: Option<String>,
    /// Agent token for registration (required with --coordinator).
    #[arg(long, env = "FLEET_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Redis URL, used without --coordinator (lease timing at defaults).
    #[arg(long, env = "FLEET_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix of the fleet in Redis, used without --coordinator.
    #[arg(long, env = "FLEET_KEY_PREFIX", default_value = "fleet:")]
    pub key_prefix: String,
    /// Which brain writes fix scripts.
    #[arg(long, env = "FLEET_BRAIN", value_enum, default_value_t = BrainKind::Sim)]
    pub brain: BrainKind,
    /// What scripts run on: `docker` (a container per slot from
    /// --target-image), `qemu` (a VM per slot from --vm-image-dir),
    /// `ssh` (the operator's VM, see --ssh-config) or `sim`.
    #[arg(long, env = "FLEET_TARGET", value_enum, default_value_t = TargetKind::Sim)]
    pub target: TargetKind,
    /// Image of Docker targets (`make target-image` builds it).
    #[arg(
        long,
        env = "FLEET_TARGET_IMAGE",
        default_value = "fleet-target:bullseye"
    )]
    pub target_image: String,
    /// CPUs per Docker target.
    #[arg(long, env = "FLEET_TARGET_CPUS", default_value_t = 1.0)]
    pub target_cpus: f64,
    /// Memory per Docker target, MiB.
    #[arg(long, env = "FLEET_TARGET_MEMORY_MB", default_value_t = 512)]
    pub target_memory_mb: u64,
    /// Process limit per Docker target.
    #[arg(long, env = "FLEET_TARGET_PIDS", default_value_t = 256)]
    pub target_pids: i64,
    /// SSH targets: TOML file with host, port, user, private_key_path,
    /// known_hosts_path, revert_command, network, sandbox_image.
    #[arg(long, env = "FLEET_SSH_CONFIG")]
    pub ssh_config: Option<std::path::PathBuf>,
    /// Image of the SSH sandbox that reaches inventory hosts for `harden`
    /// tasks (`make target-image` builds it).
    #[arg(
        long,
        env = "FLEET_SANDBOX_IMAGE",
        default_value = "fleet-sandbox:bullseye"
    )]
    pub sandbox_image: String,
    /// qemu targets: `make vm-image`'s output directory.
    #[arg(long, env = "FLEET_VM_IMAGE_DIR", default_value = ".fleet/vm-image")]
    pub vm_image_dir: std::path::PathBuf,
    /// qemu targets: guest memory per VM, MiB (qemu itself adds ~400).
    #[arg(long, env = "FLEET_VM_MEMORY_MB", default_value_t = 1024)]
    pub vm_memory_mb: u32,
    /// qemu targets: guest CPUs per VM.
    #[arg(long, env = "FLEET_VM_CPUS", default_value_t = 1)]
    pub vm_cpus: u32,
    /// qemu targets: accelerator; `auto` takes KVM only where /dev/kvm can
    /// run a stock Debian kernel, TCG otherwise (logged at start).
    #[arg(long, env = "FLEET_VM_ACCEL", value_enum, default_value_t = VmAccel::Auto)]
    pub vm_accel: VmAccel,
    /// `openai` brain: base URL up to `/v1` (vLLM `http://host:8000/v1`,
    /// llama.cpp `http://host:8080/v1`, Ollama `http://host:11434/v1`).
    #[arg(long, env = "FLEET_LLM_URL")]
    pub llm_url: Option<String>,
    /// `openai` brain: model name as the server knows it.
    #[arg(long, env = "FLEET_LLM_MODEL", default_value = "default")]
    pub llm_model: String,
    /// `openai` brain: bearer key, if the server wants one (never logged).
    #[arg(long, env = "FLEET_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// `openai` brain: sampling temperature.
    #[arg(long, env = "FLEET_LLM_TEMPERATURE", default_value_t = 0.2)]
    pub llm_temperature: f32,
    /// `openai` brain: answer length cap, tokens.
    #[arg(long, env = "FLEET_LLM_MAX_TOKENS", default_value_t = 2048)]
    pub llm_max_tokens: u32,
    /// `openai` brain: per-request timeout, seconds.
    #[arg(long, env = "FLEET_LLM_TIMEOUT_S", default_value_t = 120)]
    pub llm_timeout_s: u64,
    /// `openai` brain: retries on 429, 5xx and transport errors.
    #[arg(long, env = "FLEET_LLM_RETRIES", default_value_t = 3)]
    pub llm_retries: usize,
    /// `openai` brain: requests in flight from this agent.
    #[arg(long, env = "FLEET_LLM_CONCURRENCY", default_value_t = 2)]
    pub llm_concurrency: usize,
    /// `openai` brain: seconds the start check waits for an endpoint that
    /// does not answer yet; a wrong key or model fails at once.
    #[arg(long, env = "FLEET_LLM_START_WAIT_S", default_value_t = 30)]
    pub llm_start_wait_s: u64,
    /// `openai` brain: longest pause, seconds, between probes of an
    /// endpoint that went down mid-run (the agent holds meanwhile).
    #[arg(long, env = "FLEET_LLM_PROBE_MAX_S", default_value_t = 30)]
    pub llm_probe_max_s: u64,
    /// `openai` brain: when the endpoint goes down mid-run, hand leases
    /// back and lease nothing until it answers (true), or escalate each
    /// rule as `llm_unavailable` so the run ends anyway (false; such
    /// outcomes are not comparable and never revert knowledge).
    #[arg(long, env = "FLEET_LLM_HOLD", default_value_t = true, action = clap::ArgAction::Set)]
    pub llm_hold: bool,
    /// Leases worked at once, each on its own target.
    #[arg(long, env = "FLEET_SLOTS", default_value_t = 1)]
    pub slots: usize,
    /// Simulated work per attempt in ms (sim brain), split between exec and
    /// evaluation.
    #[arg(long, env = "FLEET_SIM_WORK_MS", default_value_t = 50)]
    pub sim_work_ms: u64,
    /// Exit 0 after this many completed leases. Default: run until SIGTERM.
    #[arg(long, env = "FLEET_MAX_LEASES")]
    pub max_leases: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics. Default: off.
    #[arg(long, env = "FLEET_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The agent's cache of the knowledge repo: one worktree per lease lives
    /// here. Used only when the coordinator serves a knowledge repo.
    /// Default: .fleet/agents/<agent-id>.
    #[arg(long, env = "FLEET_WORK_DIR")]
    pub work_dir: Option<std::path::PathBuf>,
    /// Seconds a lease keeps trying to reach the knowledge repo (the
    /// coordinator may be restarting) before it goes on without it.
    #[arg(long, env = "FLEET_KNOWLEDGE_PATIENCE_S", default_value_t = 30)]
    pub knowledge_patience_s: u64,
    /// Log line format.
    #[arg(long, env = "FLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Cli {
    pub fn into_settings(self) -> Result<AgentSettings, AgentError> {
        let id = self.id.unwrap_or_else(hostname);
        let agent = AgentId::parse(&id).map_err(AgentError::Config)?;
        let connection = match (self.coordinator, self.redis_url) {
            (Some(url), _) => {
                let token = self
                    .token
                    .ok_or_else(|| AgentError::Config("--token (FLEET_AGENT_TOKEN) is required with --coordinator".into()))?;
                Connection::Coordinator { url, token }
            }
            (None, Some(redis_url)) => Connection::Direct {
                redis_url,
                key_prefix: self.key_prefix,
                lease: LeaseSettings::default(),
            },
            (None, None) => {
                return Err(AgentError::Config(
                    "either --coordinator (FLEET_COORDINATOR_URL) or --redis-url (FLEET_REDIS_URL) is required".into(),
                ))
            }
        };
        match (self.brain, self.target) {
            (BrainKind::Sim, TargetKind::Sim)
            | (BrainKind::Ssg | BrainKind::Openai, TargetKind::Docker | TargetKind::Ssh | TargetKind::Qemu) => {}
            (BrainKind::Sim, _) => {
                return Err(AgentError::Config(
                    "--brain sim writes simulated scripts: use it with --target sim, or pick --brain ssg for a real target".into(),
                ))
            }
            (_, TargetKind::Sim) => {
                return Err(AgentError::Config(
                    "--target sim only runs simulated scripts: use --brain sim, or --target docker|qemu|ssh".into(),
                ))
            }
        }
        if self.brain == BrainKind::Openai && self.llm_url.is_none() {
            return Err(AgentError::Config(
                "--brain openai needs --llm-url (FLEET_LLM_URL), e.g. http://127.0.0.1:8000/v1"
                    .into(),
            ));
        }
        if self.target == TargetKind::Ssh && self.ssh_config.is_none() {
            return Err(AgentError::Config(
                "--target ssh needs --ssh-config FILE (FLEET_SSH_CONFIG)".into(),
            ));
        }
        if !(1..=64).contains(&self.slots) {
            return Err(AgentError::Config(format!(
                "--slots is {}: it must be between 1 and 64",
                self.slots
            )));
        }
        Ok(AgentSettings {
            agent,
            connection,
            brain: self.brain,
            llm: crate::llm::LlmSettings {
                base_url: self.llm_url.unwrap_or_default(),
                model: self.llm_model,
                api_key: self.llm_api_key,
                temperature: self.llm_temperature,
                max_tokens: self.llm_max_tokens,
                timeout: Duration::from_secs(self.llm_timeout_s.max(1)),
                retries: self.llm_retries,
                concurrency: self.llm_concurrency.max(1),
                start_wait: Duration::from_secs(self.llm_start_wait_s),
                probe_max: Duration::from_secs(self.llm_probe_max_s.max(1)),
                hold: self.llm_hold,
            },
            target: TargetSettings {
                kind: self.target,
                image: self.target_image,
                cpus: self.target_cpus,
                memory_mb: self.target_memory_mb,
                pids: self.target_pids,
                ssh_config: self.ssh_config,
                sandbox_image: self.sandbox_image,
                vm_image_dir: self.vm_image_dir,
                vm_memory_mb: self.vm_memory_mb.max(256),
                vm_cpus: self.vm_cpus.max(1),
                vm_accel: self.vm_accel.into(),
            },
            sim_work: Duration::from_millis(self.sim_work_ms),
            max_leases: self.max_leases,
            metrics_listen: self.metrics_listen,
            slots: self.slots,
            work_dir: self.work_dir,
            knowledge_patience: Duration::from_secs(self.knowledge_patience_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AgentSettings, AgentError> {
        Cli::try_parse_from(std::iter::once("fleet-agent").chain(args.iter().copied()))
            .expect("flags parse")
            .into_settings()
    }

    #[test]
    fn direct_redis_needs_no_coordinator() {
        let s = parse(&[
            "--id",
            "a-1",
            "--redis-url",
            "redis://x",
            "--key-prefix",
            "t:",
            "--max-leases",
            "3",
        ])
        .unwrap();
        assert_eq!(s.agent.as_str(), "a-1");
        assert_eq!(s.max_leases, Some(3));
        assert!(
            matches!(s.connection, Connection::Direct { ref key_prefix, .. } if key_prefix == "t:")
        );
    }

    #[test]
    fn coordinator_needs_a_token_and_ids_are_validated() {
        assert!(parse(&["--id", "a-1", "--coordinator", "http://c"]).is_err());
        assert!(parse(&["--id", "a-1", "--coordinator", "http://c", "--token", "t"]).is_ok());
        assert!(parse(&["--id", "a/1", "--redis-url", "redis://x"]).is_err());
    }

    #[test]
    fn brain_and_target_must_fit_together() {
        let base = ["--id", "a-1", "--redis-url", "redis://x"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert!(with(&[]).is_ok(), "sim + sim is the default");
        let s = with(&["--brain", "ssg", "--target", "docker", "--slots", "2"]).unwrap();
        assert_eq!(s.target.kind, TargetKind::Docker);
        assert_eq!(s.slots, 2);
        let err = with(&["--target", "docker"]).unwrap_err().to_string();
        assert!(err.contains("--brain ssg"), "{err}");
        let err = with(&["--brain", "ssg"]).unwrap_err().to_string();
        assert!(err.contains("--target docker"), "{err}");
        let err = with(&["--brain", "ssg", "--target", "ssh"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ssh-config"), "{err}");
        assert!(with(&["--slots", "0"]).is_err());
    }
}
