//! How an agent reaches an inventory host: an SSH sandbox container of its
//! own (T1, T2) with the host's pinned key (T6), and where scan results
//! are kept on the agent's host.

use std::path::PathBuf;
use std::sync::Arc;

use fleet_common::host::InventoryHost;
use fleet_common::RuleTask;
use fleet_targets::{Docker, SshTarget, SshTargetConfig};

use crate::error::AgentError;
use crate::scap::Machine;

/// Sandboxes for hosts are numbered apart from the agent's own slots.
const HOST_SLOT_BASE: u32 = 100_000;

#[derive(Clone)]
pub struct HostAccess {
    pub docker: Docker,
    pub agent: String,
    pub sandbox_image: String,
    /// ARFs and known_hosts files live under `<work_dir>/hosts/`.
    pub work_dir: PathBuf,
}

impl HostAccess {
    fn dir(&self, task: &RuleTask, host: &str) -> PathBuf {
        self.work_dir
            .join("hosts")
            .join(task.run.0.to_string())
            .join(host)
    }

    /// Where a scan's ARF of `host` is kept.
    pub fn arf_path(&self, task: &RuleTask, host: &str, name: &str) -> PathBuf {
        self.dir(task, host).join(format!("{name}.arf.xml"))
    }

    /// Starts the host's sandbox and waits until ssh answers with the
    /// pinned host key.
    pub async fn connect(
        &self,
        task: &RuleTask,
        host: &InventoryHost,
    ) -> Result<Arc<Machine>, AgentError> {
        let dir = self.dir(task, &host.name);
        let known_hosts = dir.join("known_hosts");
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&known_hosts, host.known_hosts_line()))
            .map_err(|e| AgentError::Target(format!("{}: {e}", known_hosts.display())))?;
        let slot = HOST_SLOT_BASE + (task.task.0.unsigned_abs() % 900_000) as u32;
        let mut config = SshTargetConfig::new(
            host.address.clone(),
            &host.key,
            known_hosts,
            host.revert.clone().unwrap_or_default(),
            host.network.clone(),
            self.agent.clone(),
            slot,
        );
        config.revert_optional = true;
        config.port = host.port;
        config.user = host.user.clone();
        config.sandbox_image = self.sandbox_image.clone();
        config.ready_timeout_secs = 60;
        let target = SshTarget::create(&self.docker, config)
            .await
            .map_err(|e| AgentError::Target(e.to_string()))?;
        let machine = Arc::new(Machine::Ssh(target));
        if let Err(e) = machine.baseline().await {
            let _ = machine.remove().await;
            return Err(AgentError::Target(format!("{}: {e}", host.name)));
        }
        Ok(machine)
    }
}
