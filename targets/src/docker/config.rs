//! What a container target is made of, and the names and labels that tie
//! its containers and images to one agent (DESIGN T2).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::TargetError;
use crate::output::DEFAULT_OUTPUT_CAP;

/// Label holding the owning agent's id, on containers and baseline images.
pub const LABEL_AGENT: &str = "fleet.agent";
/// Label saying what a container is: `target`, `sandbox` or `baseline`.
pub const LABEL_ROLE: &str = "fleet.role";
/// Label holding the agent's slot number.
pub const LABEL_SLOT: &str = "fleet.slot";
/// Repository of baseline images; the tag is `<agent_id>-<slot>`.
pub const BASELINE_REPO: &str = "fleet-baseline";

/// A container target. Operator-facing fields have defaults; `agent_id`
/// and `slot` come from the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerTargetConfig {
    /// Image the target starts from. Default `fleet-target:bullseye`.
    #[serde(default = "default_image")]
    pub image: String,
    /// Owning agent; `[A-Za-z0-9._-]{1,64}`.
    pub agent_id: String,
    /// The agent's slot this target serves.
    pub slot: u32,
    /// CPUs the container may use. Default 1.0.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory limit (swap included). Default 512 MiB.
    #[serde(default = "default_memory_bytes")]
    pub memory_bytes: i64,
    /// Process limit, against fork bombs. Default 256.
    #[serde(default = "default_pids_limit")]
    pub pids_limit: i64,
    /// Longest timeout an exec may ask for. Default 1800 s.
    #[serde(default = "default_max_exec_timeout_secs")]
    pub max_exec_timeout_secs: u64,
    /// Output bytes kept per exec. Default 16 KiB.
    #[serde(default = "default_output_cap")]
    pub output_cap_bytes: usize,
}

impl DockerTargetConfig {
    /// A config with every default, for `agent_id`'s `slot`.
    pub fn new(agent_id: impl Into<String>, slot: u32) -> Self {
        DockerTargetConfig {
            image: default_image(),
            agent_id: agent_id.into(),
            slot,
            cpus: default_cpus(),
            memory_bytes: default_memory_bytes(),
            pids_limit: default_pids_limit(),
            max_exec_timeout_secs: default_max_exec_timeout_secs(),
            output_cap_bytes: default_output_cap(),
        }
    }

    pub fn max_exec_timeout(&self) -> Duration {
        Duration::from_secs(self.max_exec_timeout_secs)
    }

    pub fn container_name(&self) -> String {
        format!("fleet-target-{}-{}", self.agent_id, self.slot)
    }

    /// `fleet-baseline:<agent_id>-<slot>`.
    pub fn baseline_image(&self) -> String {
        format!("{BASELINE_REPO}:{}", self.baseline_tag())
    }

    pub(crate) fn baseline_tag(&self) -> String {
        format!("{}-{}", self.agent_id, self.slot)
    }
}

/// Container and image names are built from the agent id.
pub(crate) fn validate_agent_id(agent_id: &str) -> Result<(), TargetError> {
    let ok = (1..=64).contains(&agent_id.len())
        && agent_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !agent_id.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(TargetError::InvalidAgentId(agent_id.to_string()))
    }
}

/// The labels that let `cleanup_orphans` find what an agent left behind.
pub(crate) fn labels(agent_id: &str, slot: u32, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_AGENT.to_string(), agent_id.to_string()),
        (LABEL_ROLE.to_string(), role.to_string()),
        (LABEL_SLOT.to_string(), slot.to_string()),
    ])
}

fn default_image() -> String {
    "fleet-target:bullseye".to_string()
}

fn default_cpus() -> f64 {
    1.0
}

fn default_memory_bytes() -> i64 {
    512 * 1024 * 1024
}

fn default_pids_limit() -> i64 {
    256
}

fn default_max_exec_timeout_secs() -> u64 {
    1800
}

fn default_output_cap() -> usize {
    DEFAULT_OUTPUT_CAP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_that_fit_in_names_pass() {
        assert!(validate_agent_id("agent-1.a_B").is_ok());
        assert!(validate_agent_id("").is_err());
        assert!(validate_agent_id("-x").is_err());
        assert!(validate_agent_id("a/b").is_err());
        assert!(validate_agent_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn names_carry_agent_and_slot() {
        let config = DockerTargetConfig::new("a1", 3);
        assert_eq!(config.container_name(), "fleet-target-a1-3");
        assert_eq!(config.baseline_image(), "fleet-baseline:a1-3");
    }

    #[test]
    fn toml_defaults_fill_what_is_missing() {
        let config: DockerTargetConfig =
            serde_json::from_str(r#"{"agent_id":"a","slot":0}"#).expect("config parses");
        assert_eq!(config.image, "fleet-target:bullseye");
        assert_eq!(config.pids_limit, 256);
    }
}
