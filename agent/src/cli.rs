//! Command line of `fleet-agent`. Precedence: flag > environment variable >
//! default. With `--coordinator`, Redis and lease timing come from the
//! coordinator and `--redis-url`/`--key-prefix` are ignored.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fleet_common::settings::LeaseSettings;
use fleet_common::AgentId;

use crate::error::AgentError;
use crate::settings::{hostname, AgentSettings, BrainKind, Connection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
        Ok(AgentSettings {
            agent,
            connection,
            brain: self.brain,
            sim_work: Duration::from_millis(self.sim_work_ms),
            max_leases: self.max_leases,
            metrics_listen: self.metrics_listen,
            slots: 1,
            work_dir: self.work_dir,
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
}
