//! The SSH target (DESIGN T1, T6): a VM reached only through a sandbox
//! container that holds the ssh client, has CPU, memory and pid limits and
//! joins only the operator's network. Worker scripts go over ssh; the
//! operator's revert command runs on the agent's host.

mod command;
mod config;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::Docker;
use tokio::process::Command;
use tokio::time::Instant;

pub use config::SshTargetConfig;

use crate::docker::{labels, validate_agent_id, Container, ContainerSpec, MAX_SCRIPT_BYTES};
use crate::error::TargetError;
use crate::output::{ExecOutcome, OutputBuffer};

/// Output of a helper command (probe, kill) kept for error messages.
const HELPER_CAP: usize = 4 * 1024;
/// Longest wait for a remote kill after a timeout.
const REMOTE_KILL_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for reading one file.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between probes while waiting for the target after a revert.
const READY_POLL: Duration = Duration::from_secs(1);
/// The sandbox network that means none at all.
pub(crate) const NO_NETWORK: &str = "none";

/// A VM owned by one agent slot, and its sandbox.
#[derive(Debug)]
pub struct SshTarget {
    config: SshTargetConfig,
    sandbox: Container,
    private_key: Vec<u8>,
    known_hosts: Vec<u8>,
    baselined: AtomicBool,
}

impl SshTarget {
    /// Starts the sandbox (replacing a leftover of the same name) and puts
    /// the key and known_hosts into it. No baseline yet.
    pub async fn create(docker: &Docker, config: SshTargetConfig) -> Result<Self, TargetError> {
        validate_agent_id(&config.agent_id)?;
        if config.revert_command.is_empty() && !config.revert_optional {
            return Err(TargetError::NoRevertCommand);
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| TargetError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let private_key = read(&config.private_key_path)?;
        let known_hosts = read(&config.known_hosts_path)?;
        let target = SshTarget {
            sandbox: Container {
                docker: docker.clone(),
                name: config.sandbox_name(),
            },
            config,
            private_key,
            known_hosts,
            baselined: AtomicBool::new(false),
        };
        target.start_sandbox().await?;
        Ok(target)
    }

    pub fn config(&self) -> &SshTargetConfig {
        &self.config
    }

    pub fn sandbox_name(&self) -> &str {
        &self.sandbox.name
    }

    /// The VM's baseline is the operator's snapshot that `revert_command`
    /// returns to; this records that it is in use, once ssh answers.
    pub async fn baseline(&self) -> Result<(), TargetError> {
        self.probe().await?;
        self.baselined.store(true, Ordering::SeqCst);
        tracing::info!(host = %self.config.host, sandbox = %self.sandbox.name, "ssh target baselined");
        Ok(())
    }

    /// Runs the revert command on the agent's host, then waits until ssh
    /// answers again.
    pub async fn revert(&self) -> Result<(), TargetError> {
        if !self.baselined.load(Ordering::SeqCst) {
            return Err(TargetError::NoBaseline);
        }
        let started = Instant::now();
        self.run_revert_command().await?;
        if !self.sandbox.is_running().await? {
            // A kill of last resort took the sandbox down.
            self.start_sandbox().await?;
        }
        self.wait_ready("true", self.config.ready_timeout(), READY_POLL)
            .await?;
        tracing::info!(
            host = %self.config.host,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ssh target reverted"
        );
        Ok(())
    }

    /// Runs `script` with bash on the target, stdin empty, for at most
    /// `timeout`. On timeout the ssh client and its sandbox processes are
    /// killed, then the script's processes on the target (best effort).
    /// An unreachable target or a wrong host key is an error, not an
    /// outcome: the script never ran.
    pub async fn exec(&self, script: &str, timeout: Duration) -> Result<ExecOutcome, TargetError> {
        self.exec_after("", script, timeout).await
    }

    /// [`SshTarget::exec`], with `prelude` (a remote command of the
    /// target's own, not the script's: its output is dropped) run first in
    /// the same connection.
    pub(crate) async fn exec_after(
        &self,
        prelude: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, TargetError> {
        if !self.baselined.load(Ordering::SeqCst) {
            return Err(TargetError::NoBaseline);
        }
        if script.len() > MAX_SCRIPT_BYTES {
            return Err(TargetError::ScriptTooLarge {
                len: script.len(),
                max: MAX_SCRIPT_BYTES,
            });
        }
        let marker = crate::docker::new_marker();
        let remote = command::run_script(&marker);
        let remote = if prelude.is_empty() {
            remote
        } else {
            format!("{{ {prelude}; }} >/dev/null 2>&1; {remote}")
        };
        let argv = command::sandbox_argv(&self.config, &remote, script, true);
        let timeout = timeout.min(self.config.max_exec_timeout());
        let raw = self
            .sandbox
            .run(argv, timeout, self.config.output_cap_bytes + 256, true)
            .await?;
        let mut output = raw.output;
        let started = output.strip_first(command::sentinel(&marker).as_bytes());
        if raw.timed_out {
            self.kill_remote(&marker).await;
        } else if !started {
            return Err(TargetError::SshUnreachable(output.into_text().0));
        }
        let (output, truncated) = output.into_text_capped(self.config.output_cap_bytes);
        let contained = raw.timed_out.then(|| {
            format!(
                "timed out after {} s: its processes were killed",
                timeout.as_secs()
            )
        });
        Ok(ExecOutcome {
            exit_code: raw.exit_code,
            output,
            timed_out: raw.timed_out,
            truncated,
            contained,
        })
    }

    /// Reads the regular file `path` over ssh; larger than `max_bytes` is
    /// an error.
    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, TargetError> {
        let remote = command::read_file(path, max_bytes);
        let argv = command::sandbox_argv(&self.config, &remote, "", false);
        let cap = usize::try_from(max_bytes.saturating_add(1)).unwrap_or(usize::MAX);
        let raw = self.sandbox.run(argv, READ_TIMEOUT, cap, false).await?;
        match raw.exit_code {
            Some(0) => {}
            Some(command::NOT_A_FILE) => {
                return Err(TargetError::NotAFile {
                    path: path.to_string(),
                })
            }
            Some(255) => return Err(TargetError::SshUnreachable(raw.stderr.into_text().0)),
            exit_code => {
                return Err(TargetError::Command {
                    exit_code,
                    output: raw.stderr.into_text().0,
                })
            }
        }
        if raw.output.seen() > max_bytes {
            return Err(TargetError::FileTooLarge {
                path: path.to_string(),
                max: max_bytes,
            });
        }
        Ok(raw.output.into_bytes())
    }

    /// Whether the sandbox runs and ssh answers.
    pub async fn health(&self) -> bool {
        match self.sandbox.is_running().await {
            Ok(true) => {}
            _ => return false,
        }
        match self.probe().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(host = %self.config.host, %error, "ssh target unhealthy");
                false
            }
        }
    }

    /// Removes the sandbox (shutdown). The VM is the operator's.
    pub async fn remove(&self) -> Result<(), TargetError> {
        self.sandbox.remove().await
    }

    async fn start_sandbox(&self) -> Result<(), TargetError> {
        let spec = ContainerSpec {
            name: self.config.sandbox_name(),
            image: self.config.sandbox_image.clone(),
            labels: labels(&self.config.agent_id, self.config.slot, "sandbox"),
            network: (self.config.network != NO_NETWORK).then(|| self.config.network.clone()),
            cpus: self.config.cpus,
            memory_bytes: self.config.memory_bytes,
            pids_limit: self.config.pids_limit,
        };
        let sandbox = Container::start(&self.sandbox.docker, &spec).await?;
        sandbox
            .write_file(command::KEY_PATH, &self.private_key, 0o600)
            .await?;
        sandbox
            .write_file(command::KNOWN_HOSTS_PATH, &self.known_hosts, 0o644)
            .await?;
        tracing::info!(sandbox = %spec.name, network = %self.config.network, "sandbox started");
        Ok(())
    }

    /// Probes with `remote` every `poll` until it exits 0, for at most
    /// `timeout`.
    pub(crate) async fn wait_ready(
        &self,
        remote: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<(), TargetError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.probe_with(remote).await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    tracing::warn!(host = %self.config.host, %error, "target not back");
                    return Err(TargetError::HealthTimeout(timeout));
                }
                Err(_) => tokio::time::sleep(poll).await,
            }
        }
    }

    /// Records that the baseline the target returns to is in place.
    pub(crate) fn mark_baselined(&self) {
        self.baselined.store(true, Ordering::SeqCst);
    }

    /// The sandbox's main process on the host (its namespaces are where a
    /// qemu target's VM lives).
    pub(crate) async fn sandbox_pid(&self) -> Result<u32, TargetError> {
        self.sandbox.pid().await
    }

    pub(crate) async fn sandbox_running(&self) -> Result<bool, TargetError> {
        self.sandbox.is_running().await
    }

    /// Starts the sandbox afresh (replacing one of the same name).
    pub(crate) async fn restart_sandbox(&self) -> Result<(), TargetError> {
        self.start_sandbox().await
    }

    /// `ssh … true`: Ok when the target answers with its known host key.
    async fn probe(&self) -> Result<(), TargetError> {
        self.probe_with("true").await
    }

    /// `ssh … remote`: Ok when it exits 0.
    async fn probe_with(&self, remote: &str) -> Result<(), TargetError> {
        let argv = command::sandbox_argv(&self.config, remote, "", true);
        let timeout = self.config.connect_timeout() + Duration::from_secs(5);
        let raw = self.sandbox.run(argv, timeout, HELPER_CAP, true).await?;
        if raw.exit_code == Some(0) {
            Ok(())
        } else {
            Err(TargetError::SshUnreachable(raw.output.into_text().0))
        }
    }

    /// Kills the processes of `marker` on the target; logged, not fatal:
    /// the target is reverted after a failed attempt anyway.
    async fn kill_remote(&self, marker: &str) {
        let (remote, stdin) = command::kill_script(marker);
        let argv = command::sandbox_argv(&self.config, &remote, stdin, true);
        match self
            .sandbox
            .run(argv, REMOTE_KILL_TIMEOUT, HELPER_CAP, true)
            .await
        {
            Ok(raw) if raw.exit_code == Some(0) => {}
            Ok(raw) => tracing::warn!(
                host = %self.config.host,
                exit_code = ?raw.exit_code,
                output = %raw.output.into_text().0,
                "remote kill failed"
            ),
            Err(error) => tracing::warn!(host = %self.config.host, %error, "remote kill failed"),
        }
    }

    async fn run_revert_command(&self) -> Result<(), TargetError> {
        run_operator_command(&self.config.revert_command, self.config.revert_timeout()).await
    }
}

/// Runs an operator's command (a revert, a snapshot: config, never a
/// worker script) on the agent's host, within `timeout`; its output is
/// capped into the error when it fails.
pub async fn run_operator_command(argv: &[String], timeout: Duration) -> Result<(), TargetError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(TargetError::NoRevertCommand);
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| TargetError::RevertCommand(error.to_string()))?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| TargetError::RevertCommand("timed out".to_string()))?
        .map_err(|error| TargetError::RevertCommand(error.to_string()))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = OutputBuffer::new(HELPER_CAP);
    text.push(&output.stdout);
    text.push(&output.stderr);
    Err(TargetError::RevertCommand(format!(
        "{}: {}",
        output.status,
        text.into_text().0
    )))
}
