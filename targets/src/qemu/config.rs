//! What a qemu target is: a VM booted from `make vm-image`'s output, owned
//! by one agent slot, with its own overlay, QMP socket and sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::TargetError;
use crate::output::DEFAULT_OUTPUT_CAP;

/// Which accelerator to use; `Auto` picks KVM only when it can run a stock
/// Debian kernel (see `accel.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// A qemu target. Everything but `agent_id`, `slot`, `image_dir` and
/// `run_dir` has a default.
#[derive(Debug, Clone)]
pub struct QemuTargetConfig {
    /// `make vm-image`'s output: disk.qcow2, vmlinuz, initrd.img,
    /// boot.args, id_ed25519, known_hosts.
    pub image_dir: PathBuf,
    /// This slot's own directory: the overlay, the serial console and
    /// qemu's log. (The QMP socket lives in the temp dir: a Unix socket
    /// path has at most 107 bytes.)
    pub run_dir: PathBuf,
    /// Owning agent; `[A-Za-z0-9._-]{1,64}`.
    pub agent_id: String,
    /// The agent's slot this target serves.
    pub slot: u32,
    /// Guest memory (DESIGN T2: the VM's limit). Default 1024 MiB.
    pub memory_mb: u32,
    /// Guest CPUs. Default 1.
    pub vcpus: u32,
    pub accel: AccelChoice,
    /// Longest wait for a cold boot until ssh answers. Default 300 s
    /// (about 20 s under TCG on an idle machine).
    pub boot_timeout: Duration,
    /// Longest wait for ssh after a `loadvm`. Default 60 s.
    pub revert_timeout: Duration,
    /// Image holding the ssh client. Default `fleet-sandbox:bullseye`.
    pub sandbox_image: String,
    /// Longest timeout an exec may ask for. Default 1800 s.
    pub max_exec_timeout_secs: u64,
    /// Output bytes kept per exec. Default 16 KiB.
    pub output_cap_bytes: usize,
}

impl QemuTargetConfig {
    pub fn new(
        image_dir: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
        agent_id: impl Into<String>,
        slot: u32,
    ) -> Self {
        QemuTargetConfig {
            image_dir: image_dir.into(),
            run_dir: run_dir.into(),
            agent_id: agent_id.into(),
            slot,
            memory_mb: 1024,
            vcpus: 1,
            accel: AccelChoice::Auto,
            boot_timeout: Duration::from_secs(300),
            revert_timeout: Duration::from_secs(60),
            sandbox_image: "fleet-sandbox:bullseye".to_string(),
            max_exec_timeout_secs: 1800,
            output_cap_bytes: DEFAULT_OUTPUT_CAP,
        }
    }

    /// qemu's `-name`: how the agent's VMs are told apart on the host
    /// (the orphan sweep matches it exactly).
    pub fn vm_name(&self) -> String {
        format!("fleet-vm-{}-{}", self.agent_id, self.slot)
    }

    /// The files of `make vm-image`, checked to exist, as absolute paths.
    pub(crate) fn image(&self) -> Result<VmImage, TargetError> {
        let dir = std::fs::canonicalize(&self.image_dir).map_err(|e| {
            TargetError::Vm(format!(
                "VM image directory {}: {e} (run `make vm-image`)",
                self.image_dir.display()
            ))
        })?;
        let image = VmImage {
            disk: dir.join("disk.qcow2"),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            boot_args: dir.join("boot.args"),
            private_key: dir.join("id_ed25519"),
            known_hosts: dir.join("known_hosts"),
        };
        for file in image.files() {
            if !file.is_file() {
                return Err(TargetError::Vm(format!(
                    "{} is missing (run `make vm-image`)",
                    file.display()
                )));
            }
        }
        Ok(image)
    }

    /// The slot's files: its run directory, created, as absolute paths.
    pub(crate) fn run_paths(&self) -> Result<RunPaths, TargetError> {
        std::fs::create_dir_all(&self.run_dir).map_err(|source| TargetError::Io {
            path: self.run_dir.clone(),
            source,
        })?;
        let dir = std::fs::canonicalize(&self.run_dir).map_err(|source| TargetError::Io {
            path: self.run_dir.clone(),
            source,
        })?;
        let paths = RunPaths {
            overlay: dir.join("overlay.qcow2"),
            qmp: std::env::temp_dir().join(format!("{}.qmp", self.vm_name())),
            serial: dir.join("serial.log"),
            log: dir.join("qemu.log"),
        };
        Ok(paths)
    }
}

/// `make vm-image`'s files.
#[derive(Debug, Clone)]
pub(crate) struct VmImage {
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub boot_args: PathBuf,
    pub private_key: PathBuf,
    pub known_hosts: PathBuf,
}

impl VmImage {
    fn files(&self) -> [&Path; 6] {
        [
            &self.disk,
            &self.kernel,
            &self.initrd,
            &self.boot_args,
            &self.private_key,
            &self.known_hosts,
        ]
    }
}

/// A slot's files on the agent's host.
#[derive(Debug, Clone)]
pub(crate) struct RunPaths {
    pub overlay: PathBuf,
    pub qmp: PathBuf,
    pub serial: PathBuf,
    pub log: PathBuf,
}
