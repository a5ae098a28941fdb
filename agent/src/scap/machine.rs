//! One real machine per slot, Docker, qemu or SSH, behind the agent's
//! `Target`.

use std::sync::Arc;
use std::time::Duration;

use fleet_targets::{DockerTarget, ExecOutcome, QemuTarget, SshTarget, TargetError};

use crate::error::AgentError;
use crate::workbench::{cap_output, BoxFuture, ExecResult, Target};

/// A slot's machine; shared by its target, evaluator and `ssg` brain.
pub enum Machine {
    Docker(DockerTarget),
    Ssh(SshTarget),
    /// Boxed: a VM's state is several times a container's.
    Qemu(Box<QemuTarget>),
}

impl Machine {
    pub async fn exec(&self, script: &str, timeout: Duration) -> Result<ExecOutcome, TargetError> {
        match self {
            Self::Docker(t) => t.exec(script, timeout).await,
            Self::Ssh(t) => t.exec(script, timeout).await,
            Self::Qemu(t) => t.exec(script, timeout).await,
        }
    }

    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, TargetError> {
        match self {
            Self::Docker(t) => t.read_file(path, max_bytes).await,
            Self::Ssh(t) => t.read_file(path, max_bytes).await,
            Self::Qemu(t) => t.read_file(path, max_bytes).await,
        }
    }

    pub async fn baseline(&self) -> Result<(), TargetError> {
        match self {
            Self::Docker(t) => t.baseline().await,
            Self::Ssh(t) => t.baseline().await,
            Self::Qemu(t) => t.baseline().await,
        }
    }

    pub async fn revert(&self) -> Result<(), TargetError> {
        match self {
            Self::Docker(t) => t.revert().await,
            Self::Ssh(t) => t.revert().await,
            Self::Qemu(t) => t.revert().await,
        }
    }

    pub async fn health(&self) -> bool {
        match self {
            Self::Docker(t) => t.health().await,
            Self::Ssh(t) => t.health().await,
            Self::Qemu(t) => t.health().await,
        }
    }

    /// Removes the containers this machine created (graceful shutdown).
    pub async fn remove(&self) -> Result<(), TargetError> {
        match self {
            Self::Docker(t) => t.remove().await,
            Self::Ssh(t) => t.remove().await,
            Self::Qemu(t) => t.remove().await,
        }
    }
}

fn target_error(e: TargetError) -> AgentError {
    AgentError::Target(e.to_string())
}

/// [`Machine`] as the remediation loop's [`Target`].
#[derive(Clone)]
pub struct MachineTarget(pub Arc<Machine>);

impl Target for MachineTarget {
    fn baseline(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move { self.0.baseline().await.map_err(target_error) })
    }

    fn exec<'a>(
        &'a self,
        script: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResult, AgentError>> {
        Box::pin(async move {
            let out = self.0.exec(script, timeout).await.map_err(target_error)?;
            Ok(ExecResult {
                exit_code: out.exit_code,
                output: cap_output(out.output),
                timed_out: out.timed_out,
                contained: out.contained,
            })
        })
    }

    fn revert(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move { self.0.revert().await.map_err(target_error) })
    }

    fn health(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.0.health())
    }

    fn read_file<'a>(
        &'a self,
        path: &'a str,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, AgentError>> {
        Box::pin(async move {
            self.0
                .read_file(path, max_bytes)
                .await
                .map_err(target_error)
        })
    }
}
