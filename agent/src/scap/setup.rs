//! One workbench per slot on real machines. On start the agent first
//! removes what a crashed earlier incarnation left (containers, baseline
//! images, found by the agent label), then creates its own.

use std::sync::Arc;

use fleet_targets::{
    cleanup_orphans, connect_docker, DockerTarget, DockerTargetConfig, QemuTarget,
    QemuTargetConfig, SshTarget, SshTargetConfig,
};
use tracing::{info, warn};

use super::{Machine, MachineTarget, OscapEvaluator, SsgBrain};
use crate::error::AgentError;
use crate::llm::{ChatClient, OpenAiBrain};
use crate::settings::{AgentSettings, BrainKind, TargetKind};
use crate::workbench::{Brain, Workbench};

/// Machines and the workbenches using them; the machines are removed at
/// shutdown with [`remove_all`].
pub async fn real_workbenches(
    settings: &AgentSettings,
) -> Result<(Vec<Workbench>, Vec<Arc<Machine>>), AgentError> {
    let agent = settings.agent.as_str();
    let docker = connect_docker().map_err(|e| {
        AgentError::Target(format!(
            "{e}: real targets need the Docker engine on this host"
        ))
    })?;
    let (containers, images) = cleanup_orphans(&docker, agent)
        .await
        .map_err(|e| AgentError::Target(e.to_string()))?;
    if containers + images > 0 {
        info!(
            containers,
            images, "removed what an earlier incarnation left behind"
        );
    }
    // All slots at once: a VM's boot is most of an agent's start.
    let slots = (0..settings.slots.max(1) as u32).map(|slot| machine(settings, &docker, slot));
    let machines: Vec<Arc<Machine>> = futures_util::future::try_join_all(slots)
        .await?
        .into_iter()
        .map(Arc::new)
        .collect();
    // One client for all slots: the concurrency limit is per endpoint.
    let llm = match settings.brain {
        BrainKind::Openai => Some(
            ChatClient::new(settings.llm.clone()).map_err(|e| AgentError::Config(e.to_string()))?,
        ),
        _ => None,
    };
    let benches = machines
        .iter()
        .map(|m| Workbench {
            brain: match &llm {
                Some(client) => Arc::new(OpenAiBrain {
                    client: client.clone(),
                }) as Arc<dyn Brain>,
                None => Arc::new(SsgBrain::new(m.clone())),
            },
            target: Arc::new(MachineTarget(m.clone())),
            evaluator: Arc::new(OscapEvaluator::new(m.clone())),
        })
        .collect();
    Ok((benches, machines))
}

/// A qemu slot's overlay, QMP socket and console, under the agent's work
/// directory.
fn vm_run_dir(settings: &AgentSettings, slot: u32) -> std::path::PathBuf {
    settings
        .work_dir
        .clone()
        .unwrap_or_else(|| crate::knowledge::default_work_dir(settings.agent.as_str()))
        .join(format!("vm-{slot}"))
}

/// Slot `slot`'s machine, created (a qemu VM also booted).
async fn machine(
    settings: &AgentSettings,
    docker: &fleet_targets::Docker,
    slot: u32,
) -> Result<Machine, AgentError> {
    let agent = settings.agent.as_str();
    Ok(match settings.target.kind {
        TargetKind::Docker => {
            let mut config = DockerTargetConfig::new(agent, slot);
            config.image = settings.target.image.clone();
            config.cpus = settings.target.cpus;
            config.memory_bytes = (settings.target.memory_mb * 1024 * 1024) as i64;
            config.pids_limit = settings.target.pids;
            Machine::Docker(DockerTarget::create(docker, config).await.map_err(|e| {
                AgentError::Target(format!(
                    "{e} (image {}: run `make target-image`)",
                    settings.target.image
                ))
            })?)
        }
        TargetKind::Ssh => {
            let config = ssh_config(settings, slot)?;
            Machine::Ssh(
                SshTarget::create(docker, config)
                    .await
                    .map_err(|e| AgentError::Target(e.to_string()))?,
            )
        }
        TargetKind::Qemu => {
            let mut config = QemuTargetConfig::new(
                &settings.target.vm_image_dir,
                vm_run_dir(settings, slot),
                agent,
                slot,
            );
            config.memory_mb = settings.target.vm_memory_mb;
            config.vcpus = settings.target.vm_cpus;
            config.accel = settings.target.vm_accel;
            config.sandbox_image = settings.target.sandbox_image.clone();
            Machine::Qemu(Box::new(
                QemuTarget::create(docker, config)
                    .await
                    .map_err(|e| AgentError::Target(e.to_string()))?,
            ))
        }
        TargetKind::Sim => {
            return Err(AgentError::Config(
                "sim targets are not real machines".into(),
            ))
        }
    })
}

/// The operator's SSH target file plus this agent's id and slot.
fn ssh_config(settings: &AgentSettings, slot: u32) -> Result<SshTargetConfig, AgentError> {
    let path = settings
        .target
        .ssh_config
        .as_ref()
        .ok_or_else(|| AgentError::Config("--target ssh needs --ssh-config".into()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| AgentError::Config(format!("cannot read {}: {e}", path.display())))?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
    table.insert("agent_id".into(), settings.agent.as_str().into());
    table.insert("slot".into(), i64::from(slot).into());
    table
        .try_into()
        .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))
}

/// Removes the agent's containers (graceful shutdown); failures are logged,
/// the next start's orphan cleanup catches what is left.
pub async fn remove_all(machines: &[Arc<Machine>]) {
    for m in machines {
        if let Err(e) = m.remove().await {
            warn!(error = %e, "removing a target failed; the next start cleans it up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Connection, TargetSettings};
    use fleet_common::settings::LeaseSettings;
    use fleet_common::AgentId;

    fn settings(file: &std::path::Path) -> AgentSettings {
        AgentSettings {
            agent: AgentId::parse("agent-7").unwrap(),
            connection: Connection::Direct {
                redis_url: "redis://x".into(),
                key_prefix: "t:".into(),
                lease: LeaseSettings::default(),
            },
            brain: crate::settings::BrainKind::Ssg,
            llm: Default::default(),
            target: TargetSettings {
                kind: TargetKind::Ssh,
                ssh_config: Some(file.to_owned()),
                ..TargetSettings::default()
            },
            sim_work: std::time::Duration::ZERO,
            max_leases: None,
            metrics_listen: None,
            slots: 2,
            work_dir: None,
            knowledge_patience: std::time::Duration::from_secs(30),
        }
    }

    #[test]
    fn the_operator_file_gets_the_agent_id_and_slot() {
        let file = std::env::temp_dir().join(format!("ssh-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &file,
            r#"host = "vm1.example"
private_key_path = "/etc/fleet/id_ed25519"
known_hosts_path = "/etc/fleet/known_hosts"
revert_command = ["virsh", "snapshot-revert", "vm1", "baseline"]
network = "fleet-vms"
"#,
        )
        .unwrap();
        let c = ssh_config(&settings(&file), 1).unwrap();
        assert_eq!((c.agent_id.as_str(), c.slot), ("agent-7", 1));
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("vm1.example", 22, "root")
        );
        assert_eq!(c.revert_command[0], "virsh");

        std::fs::write(&file, "host = \"vm1\"\nsurprise = 1\n").unwrap();
        let err = ssh_config(&settings(&file), 0).unwrap_err().to_string();
        assert!(err.contains("surprise") || err.contains("unknown"), "{err}");
        std::fs::remove_file(&file).unwrap();
    }
}
