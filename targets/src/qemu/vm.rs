//! One qemu process: started inside its sandbox container's network and
//! pid namespaces (`nsenter`), so the guest's only link is a port on the
//! sandbox's own loopback, and removing the sandbox kills qemu with it
//! (the kernel ends every process of a pid namespace whose init dies).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::accel::Accel;
use super::config::{QemuTargetConfig, RunPaths, VmImage};
use super::netns::NetNs;
use super::qmp::Qmp;
use crate::error::TargetError;

/// The snapshot every revert returns to.
pub(crate) const BASELINE_TAG: &str = "fleet-baseline";
/// Where the guest's sshd answers, on the sandbox's loopback.
pub(crate) const GUEST_SSH_PORT: u16 = 2222;
/// Longest wait for qemu's QMP socket after the process starts.
const QMP_WAIT: Duration = Duration::from_secs(30);
/// qemu's scheduling priority (`nice`), below everything the fleet runs.
const NICENESS: i32 = 10;
/// Bytes of qemu's log kept in an error.
const LOG_TAIL: usize = 2048;

/// A running qemu and its monitor.
#[derive(Debug)]
pub(crate) struct Vm {
    /// `nice nsenter`, whose child is qemu; ends when qemu does.
    process: Child,
    pub qmp: Qmp,
    /// The sandbox's network namespace, where the guest's sshd answers.
    pub netns: NetNs,
}

/// How a VM starts: a cold boot, or straight into the baseline snapshot
/// of an overlay that holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    Boot,
    FromBaseline,
}

impl Vm {
    /// Starts qemu in the namespaces of `sandbox_pid`, on `paths.overlay`
    /// (which must exist), and connects to its monitor.
    pub async fn launch(
        config: &QemuTargetConfig,
        image: &VmImage,
        paths: &RunPaths,
        accel: Accel,
        sandbox_pid: u32,
        start: Start,
    ) -> Result<Vm, TargetError> {
        let netns = NetNs::of(sandbox_pid)?;
        let boot_args =
            std::fs::read_to_string(&image.boot_args).map_err(|source| TargetError::Io {
                path: image.boot_args.clone(),
                source,
            })?;
        let _ = std::fs::remove_file(&paths.qmp);
        let log = std::fs::File::create(&paths.log).map_err(|source| TargetError::Io {
            path: paths.log.clone(),
            source,
        })?;
        // Below the agent, Redis and the coordinator: a TCG guest takes a
        // whole core, and the agent's lease renewals must still be
        // scheduled on time (DESIGN L3).
        let mut argv = vec![
            "-n".to_string(),
            NICENESS.to_string(),
            "nsenter".to_string(),
            "--target".to_string(),
            sandbox_pid.to_string(),
            "--net".to_string(),
            "--pid".to_string(),
            "--".to_string(),
        ];
        argv.extend(qemu_argv(
            config,
            image,
            paths,
            accel,
            boot_args.trim(),
            start,
        ));
        let process = Command::new("nice")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            // Not killed with the agent's handle: a crashed agent's VM
            // goes with its sandbox (orphan cleanup), a live one by `quit`.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| TargetError::Vm(format!("cannot start nsenter/qemu: {e}")))?;
        let mut vm_process = process;
        let qmp = match Qmp::connect(&paths.qmp, QMP_WAIT).await {
            Ok(qmp) => qmp,
            Err(error) => {
                let _ = vm_process.start_kill();
                let _ = vm_process.wait().await;
                return Err(TargetError::Vm(format!(
                    "qemu did not come up ({error}); its log says: {}",
                    log_tail(&paths.log)
                )));
            }
        };
        Ok(Vm {
            process: vm_process,
            qmp,
            netns,
        })
    }

    /// Whether qemu still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// The guest's run state (`running`, `shutdown`, …); `None` when qemu
    /// or its monitor is gone.
    pub async fn status_if_alive(&mut self) -> Option<String> {
        if !self.alive() {
            return None;
        }
        self.qmp.status().await.ok()
    }

    /// Ends qemu: `quit` through the monitor, then a kill if it lingers.
    pub async fn stop(mut self) {
        let quit = tokio::time::timeout(Duration::from_secs(10), self.qmp.quit()).await;
        if !matches!(quit, Ok(Ok(()))) {
            let _ = self.process.start_kill();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.process.wait()).await;
    }
}

/// A fresh overlay on the image's disk (the image itself is never written).
pub(crate) async fn create_overlay(image: &VmImage, overlay: &Path) -> Result<(), TargetError> {
    let _ = std::fs::remove_file(overlay);
    let output = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&image.disk)
        .arg(overlay)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| TargetError::Vm(format!("cannot run qemu-img ({e}): run `make deps`")))?;
    if !output.status.success() {
        return Err(TargetError::Vm(format!(
            "qemu-img create {}: {}",
            overlay.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// qemu's command line: no devices but a virtio disk and NIC, no network
/// beyond one port forward to sshd (`restrict=on`), qemu's own seccomp
/// sandbox, a guest that stays stopped instead of rebooting or exiting
/// (so a `poweroff` in a script can still be reverted by `loadvm`).
pub(crate) fn qemu_argv(
    config: &QemuTargetConfig,
    image: &VmImage,
    paths: &RunPaths,
    accel: Accel,
    boot_args: &str,
    start: Start,
) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "qemu-system-x86_64".into(),
        "-name".into(),
        format!("guest={},process={}", config.vm_name(), config.vm_name()),
        "-accel".into(),
        accel.as_str().into(),
    ];
    if accel == Accel::Kvm {
        argv.extend(["-cpu".into(), "host".into()]);
    }
    argv.extend([
        "-m".into(),
        config.memory_mb.to_string(),
        "-smp".into(),
        config.vcpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-no-shutdown".into(),
        "-sandbox".into(),
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
        "-kernel".into(),
        image.kernel.display().to_string(),
        "-initrd".into(),
        image.initrd.display().to_string(),
        "-append".into(),
        boot_args.to_string(),
        "-drive".into(),
        format!("file={},if=virtio,format=qcow2", paths.overlay.display()),
        "-netdev".into(),
        format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{GUEST_SSH_PORT}-:22"),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
        "-serial".into(),
        format!("file:{}", paths.serial.display()),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", paths.qmp.display()),
    ]);
    if start == Start::FromBaseline {
        argv.extend(["-loadvm".into(), BASELINE_TAG.into()]);
    }
    argv
}

/// Kills qemu processes named `name` left by an earlier incarnation whose
/// sandbox is already gone; returns how many. Matched on the exact `-name`.
pub(crate) fn kill_strays(name: &str) -> usize {
    let wanted = format!("guest={name},process={name}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let is_qemu = args
            .next()
            .is_some_and(|arg0| arg0.ends_with(b"qemu-system-x86_64"));
        if is_qemu && args.any(|arg| arg == wanted.as_bytes()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
    }
    killed
}

/// The end of qemu's log, for an error message.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL);
    let tail = String::from_utf8_lossy(&text[start..]).trim().to_string();
    if tail.is_empty() {
        "(nothing)".to_string()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture() -> (QemuTargetConfig, VmImage, RunPaths) {
        let config = QemuTargetConfig::new("/img", "/run/x", "agent-1", 2);
        let image = VmImage {
            disk: "/img/disk.qcow2".into(),
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd.img".into(),
            boot_args: "/img/boot.args".into(),
            private_key: "/img/id_ed25519".into(),
            known_hosts: "/img/known_hosts".into(),
        };
        let run = PathBuf::from("/run/x");
        let paths = RunPaths {
            overlay: run.join("overlay.qcow2"),
            qmp: run.join("qmp.sock"),
            serial: run.join("serial.log"),
            log: run.join("qemu.log"),
        };
        (config, image, paths)
    }

    #[test]
    fn the_guest_gets_one_port_forward_and_no_other_network() {
        let (config, image, paths) = fixture();
        let argv = qemu_argv(
            &config,
            &image,
            &paths,
            Accel::Tcg,
            "root=/dev/vda",
            Start::Boot,
        );
        let joined = argv.join(" ");
        assert!(joined.contains("-name guest=fleet-vm-agent-1-2,process=fleet-vm-agent-1-2"));
        assert!(joined.contains("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"));
        assert!(joined.contains("-m 1024 -smp 1"));
        assert!(joined.contains("-no-reboot -no-shutdown"));
        assert!(!joined.contains("-loadvm"));
        assert!(!joined.contains("-cpu host"));
        let argv = qemu_argv(&config, &image, &paths, Accel::Kvm, "", Start::FromBaseline);
        let joined = argv.join(" ");
        assert!(joined.contains("-accel kvm -cpu host"));
        assert!(joined.ends_with("-loadvm fleet-baseline"));
    }
}
