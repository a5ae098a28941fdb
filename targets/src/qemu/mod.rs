//! The qemu target (issue 24): a VM per agent slot from `make vm-image`,
//! reverted by `loadvm` of a baseline snapshot taken once it booted.
//!
//! The VM runs in its sandbox container's network and pid namespaces:
//! the guest's user-mode network (`restrict=on`) has one port forward to
//! its sshd on the sandbox's loopback, and the sandbox (no network of its
//! own) holds the ssh client. Worker scripts thus reach the guest only
//! through the sandbox (DESIGN T1), and the orphan cleanup that removes a
//! crashed agent's containers takes its VMs with them (T2).
//!
//! - `config.rs`: `QemuTargetConfig`, the image's and the slot's files.
//! - `accel.rs`: KVM or TCG.
//! - `vm.rs`: one qemu process, its command line, overlays, strays.
//! - `qmp.rs`: the QEMU Machine Protocol client (`savevm`/`loadvm`).
//! - `netns.rs`: sshd's banner read from inside the sandbox's network
//!   namespace (the revert's "SSH answers").

mod accel;
mod config;
mod netns;
mod qmp;
mod vm;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use accel::Accel;
pub use config::{AccelChoice, QemuTargetConfig};
pub use qmp::Qmp;

use crate::error::TargetError;
use crate::output::ExecOutcome;
use crate::ssh::{SshTarget, SshTargetConfig, NO_NETWORK};
use config::{RunPaths, VmImage};
use vm::{create_overlay, Start, Vm, BASELINE_TAG, GUEST_SSH_PORT};

/// Pause between banner probes while a VM comes back: a `loadvm`ed guest
/// answers within a few hundred ms, so the poll is short.
const READY_POLL: Duration = Duration::from_millis(50);
/// Longest wait of one banner probe.
const BANNER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a running script's VM is asked whether it still runs.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// Pause between ssh probes during a cold boot.
const BOOT_POLL: Duration = Duration::from_secs(1);
/// The ssh `ConnectTimeout` towards the guest (a loopback hop).
const CONNECT_TIMEOUT_SECS: u64 = 5;

/// A VM owned by one agent slot, and its sandbox.
#[derive(Debug)]
pub struct QemuTarget {
    config: QemuTargetConfig,
    image: VmImage,
    paths: RunPaths,
    accel: Accel,
    ssh: SshTarget,
    vm: Mutex<Option<Vm>>,
    /// A `loadvm` put the guest's clock back to the snapshot's time; the
    /// next exec sets it first.
    clock_behind: AtomicBool,
}

impl QemuTarget {
    /// Starts the sandbox and boots the VM on a fresh overlay, waiting
    /// until ssh answers. No baseline yet: [`QemuTarget::baseline`] takes
    /// it.
    pub async fn create(docker: &Docker, config: QemuTargetConfig) -> Result<Self, TargetError> {
        let image = config.image()?;
        let paths = config.run_paths()?;
        let strays = vm::kill_strays(&config.vm_name());
        if strays > 0 {
            tracing::info!(vm = %config.vm_name(), strays, "stray qemu of an earlier incarnation killed");
        }
        let (accel, why) = accel::choose(config.accel, accel::HostVirt::read());
        tracing::info!(vm = %config.vm_name(), accel = accel.as_str(), why, "qemu accelerator");
        let ssh = SshTarget::create(docker, ssh_config(&config, &image)).await?;
        let target = QemuTarget {
            config,
            image,
            paths,
            accel,
            ssh,
            vm: Mutex::new(None),
            clock_behind: AtomicBool::new(false),
        };
        let started = Instant::now();
        let booted = target.cold_boot().await?;
        *target.vm.lock().await = Some(booted);
        tracing::info!(
            vm = %target.config.vm_name(),
            boot_ms = started.elapsed().as_millis() as u64,
            "vm booted"
        );
        Ok(target)
    }

    pub fn config(&self) -> &QemuTargetConfig {
        &self.config
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn sandbox_name(&self) -> &str {
        self.ssh.sandbox_name()
    }

    /// Saves the booted VM as the snapshot every revert returns to.
    pub async fn baseline(&self) -> Result<(), TargetError> {
        let mut vm = self.vm.lock().await;
        let vm = vm
            .as_mut()
            .ok_or_else(|| TargetError::Vm("no VM running".into()))?;
        let started = Instant::now();
        vm.qmp.savevm(BASELINE_TAG).await?;
        self.ssh.mark_baselined();
        tracing::info!(
            vm = %self.config.vm_name(),
            savevm_ms = started.elapsed().as_millis() as u64,
            "vm baselined"
        );
        Ok(())
    }

    /// `loadvm` of the baseline, then waits until ssh answers (and sets the
    /// guest's clock, which the snapshot put back). When that fails, the VM
    /// is restarted from its overlay straight into the baseline; when that
    /// fails too, it boots afresh and takes a new baseline.
    pub async fn revert(&self) -> Result<(), TargetError> {
        let mut vm = self.vm.lock().await;
        let started = Instant::now();
        let loaded = match vm.as_mut() {
            Some(running) => self.load_baseline(running).await,
            None => Err(TargetError::Vm("qemu is not running".into())),
        };
        match loaded {
            Ok(()) => {
                tracing::info!(
                    vm = %self.config.vm_name(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "vm reverted"
                );
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(vm = %self.config.vm_name(), %error, "the vm did not come back at its baseline; restarting it from its overlay");
            }
        }
        if let Some(old) = vm.take() {
            old.stop().await;
        }
        *vm = Some(self.restart().await?);
        tracing::info!(
            vm = %self.config.vm_name(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "vm restarted at its baseline"
        );
        Ok(())
    }

    /// Runs `script` in the guest through the sandbox (see
    /// [`SshTarget::exec`]), setting the guest's clock first after a
    /// revert. The VM is watched meanwhile: a guest that powers off or
    /// crashes ends the exec at once, named in `contained` (its ssh
    /// connection would only time out).
    pub async fn exec(&self, script: &str, timeout: Duration) -> Result<ExecOutcome, TargetError> {
        let prelude = if self.clock_behind.swap(false, Ordering::SeqCst) {
            set_clock()
        } else {
            String::new()
        };
        let exec = self.ssh.exec_after(&prelude, script, timeout);
        tokio::pin!(exec);
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.tick().await;
        loop {
            tokio::select! {
                outcome = &mut exec => return outcome,
                _ = watch.tick() => {
                    if let Some(why) = self.vm_stopped().await {
                        tracing::warn!(vm = %self.config.vm_name(), why, "the guest stopped under a script");
                        return Ok(ExecOutcome {
                            exit_code: None,
                            output: String::new(),
                            timed_out: false,
                            truncated: false,
                            contained: Some(why.to_string()),
                        });
                    }
                }
            }
        }
    }

    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, TargetError> {
        self.ssh.read_file(path, max_bytes).await
    }

    /// Whether qemu runs a running guest and ssh answers.
    pub async fn health(&self) -> bool {
        {
            let mut vm = self.vm.lock().await;
            let Some(running) = vm.as_mut() else {
                return false;
            };
            if !running.alive() {
                return false;
            }
            match running.qmp.status().await {
                Ok(status) if status == "running" => {}
                Ok(status) => {
                    tracing::warn!(vm = %self.config.vm_name(), %status, "vm not running");
                    return false;
                }
                Err(error) => {
                    tracing::warn!(vm = %self.config.vm_name(), %error, "vm monitor unreachable");
                    return false;
                }
            }
        }
        self.ssh.health().await
    }

    /// Ends qemu and removes the sandbox and the overlay (shutdown).
    pub async fn remove(&self) -> Result<(), TargetError> {
        if let Some(vm) = self.vm.lock().await.take() {
            vm.stop().await;
        }
        let removed = self.ssh.remove().await;
        let _ = std::fs::remove_file(&self.paths.overlay);
        removed
    }

    async fn load_baseline(&self, vm: &mut Vm) -> Result<(), TargetError> {
        if !vm.alive() {
            return Err(TargetError::Vm("qemu is not running".into()));
        }
        let started = Instant::now();
        vm.qmp.loadvm(BASELINE_TAG).await?;
        tracing::debug!(vm = %self.config.vm_name(), loadvm_ms = started.elapsed().as_millis() as u64, "loadvm done");
        // A guest paused before the load stays paused after it; one that
        // powered off or crashed cannot resume at all ("Resetting the
        // Virtual Machine is required"): qemu restarts from the overlay.
        let status = vm.qmp.status().await?;
        if status != "running" {
            vm.qmp.execute("cont", None).await?;
        }
        self.clock_behind.store(true, Ordering::SeqCst);
        self.wait_banner(vm).await
    }

    /// qemu again on the same overlay, straight into the baseline; a cold
    /// boot with a new baseline when that does not come back.
    async fn restart(&self) -> Result<Vm, TargetError> {
        if !self.ssh.sandbox_running().await? {
            self.ssh.restart_sandbox().await?;
        }
        let resumed = async {
            let vm = self.launch(Start::FromBaseline).await?;
            self.clock_behind.store(true, Ordering::SeqCst);
            self.wait_banner(&vm).await.map(|()| vm)
        };
        match resumed.await {
            Ok(vm) => return Ok(vm),
            Err(error) => {
                tracing::warn!(vm = %self.config.vm_name(), %error, "the overlay's baseline did not come back; booting afresh");
            }
        }
        // Whatever runs in the sandbox now goes with it.
        self.ssh.restart_sandbox().await?;
        let mut vm = self.cold_boot().await?;
        vm.qmp.savevm(BASELINE_TAG).await?;
        Ok(vm)
    }

    /// qemu on the slot's overlay, in the sandbox's namespaces.
    async fn launch(&self, start: Start) -> Result<Vm, TargetError> {
        let pid = self.ssh.sandbox_pid().await?;
        Vm::launch(
            &self.config,
            &self.image,
            &self.paths,
            self.accel,
            pid,
            start,
        )
        .await
    }

    /// A fresh overlay and a boot until ssh answers.
    async fn cold_boot(&self) -> Result<Vm, TargetError> {
        create_overlay(&self.image, &self.paths.overlay).await?;
        let vm = self.launch(Start::Boot).await?;
        if let Err(error) = self
            .ssh
            .wait_ready("true", self.config.boot_timeout, BOOT_POLL)
            .await
        {
            vm.stop().await;
            return Err(TargetError::Vm(format!(
                "the guest did not answer ssh within {:?} ({error}); serial console: {}",
                self.config.boot_timeout,
                vm::log_tail(&self.paths.serial)
            )));
        }
        Ok(vm)
    }

    /// Why the VM no longer runs its guest, if it does not.
    async fn vm_stopped(&self) -> Option<&'static str> {
        let status = {
            let mut vm = self.vm.lock().await;
            match vm.as_mut() {
                Some(running) => running.status_if_alive().await,
                None => None,
            }
        };
        match status.as_deref() {
            None => Some("qemu stopped: the VM is restarted from its overlay"),
            Some("shutdown") => Some("the guest powered off: the VM is reverted"),
            Some("guest-panicked" | "internal-error") => {
                Some("the guest crashed: the VM is reverted")
            }
            Some(_) => None,
        }
    }

    /// Waits until the guest's sshd sends its banner.
    async fn wait_banner(&self, vm: &Vm) -> Result<(), TargetError> {
        let deadline = Instant::now() + self.config.revert_timeout;
        loop {
            match vm.netns.ssh_banner(GUEST_SSH_PORT, BANNER_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    tracing::warn!(vm = %self.config.vm_name(), %error, "sshd not back");
                    return Err(TargetError::HealthTimeout(self.config.revert_timeout));
                }
                Err(_) => tokio::time::sleep(READY_POLL).await,
            }
        }
    }
}

/// The sandbox side of a qemu target: ssh to the guest's forwarded port on
/// the sandbox's loopback, host key filed as `fleet-vm` by `make vm-image`.
fn ssh_config(config: &QemuTargetConfig, image: &VmImage) -> SshTargetConfig {
    let mut ssh = SshTargetConfig::new(
        "127.0.0.1",
        &image.private_key,
        &image.known_hosts,
        Vec::new(),
        NO_NETWORK,
        config.agent_id.clone(),
        config.slot,
    );
    ssh.port = GUEST_SSH_PORT;
    ssh.host_key_alias = Some("fleet-vm".into());
    ssh.revert_optional = true;
    ssh.connect_timeout_secs = CONNECT_TIMEOUT_SECS;
    ssh.sandbox_image = config.sandbox_image.clone();
    ssh.max_exec_timeout_secs = config.max_exec_timeout_secs;
    ssh.output_cap_bytes = config.output_cap_bytes;
    ssh
}

/// Puts the guest's clock right: after `loadvm` it reads the snapshot's
/// time (DESIGN L2 keeps lease timing on Redis's clock anyway; this keeps
/// logs, file times and time-based checks in the guest sane).
fn set_clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "date -u -s @{}.{:03} >/dev/null",
        now.as_secs(),
        now.subsec_millis()
    )
}
