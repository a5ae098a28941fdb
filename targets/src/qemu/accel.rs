//! KVM when `/dev/kvm` can run a stock Debian guest, TCG otherwise. A
//! `/dev/kvm` that opens is not enough: a PVM host (`kvm_pvm`) runs only
//! PVM guest kernels, and qemu would start and the guest never boot.

use std::path::Path;

use super::config::AccelChoice;

/// The accelerator a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// What the host offers, read once from `/dev`, `/sys` and `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostVirt {
    /// `/dev/kvm` opens read-write.
    pub kvm_device: bool,
    /// `kvm_intel` or `kvm_amd` is loaded.
    pub hardware_module: bool,
    /// `kvm_pvm` is loaded.
    pub pvm_module: bool,
    /// The CPU shows `vmx` or `svm`.
    pub cpu_flags: bool,
}

impl HostVirt {
    pub fn read() -> Self {
        let module = |name: &str| Path::new("/sys/module").join(name).exists();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostVirt {
            kvm_device: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
            hardware_module: module("kvm_intel") || module("kvm_amd"),
            pvm_module: module("kvm_pvm"),
            cpu_flags: cpuinfo
                .split_whitespace()
                .any(|flag| flag == "vmx" || flag == "svm"),
        }
    }
}

/// The accelerator for `choice` on `host`, and why (for the log line).
pub(crate) fn choose(choice: AccelChoice, host: HostVirt) -> (Accel, &'static str) {
    match choice {
        AccelChoice::Tcg => (Accel::Tcg, "asked for"),
        AccelChoice::Kvm => (Accel::Kvm, "asked for"),
        AccelChoice::Auto if !host.kvm_device => (Accel::Tcg, "no usable /dev/kvm"),
        AccelChoice::Auto if !host.hardware_module && host.pvm_module => (
            Accel::Tcg,
            "/dev/kvm is PVM (kvm_pvm), which runs only PVM guest kernels",
        ),
        AccelChoice::Auto if !host.hardware_module || !host.cpu_flags => (
            Accel::Tcg,
            "no hardware virtualization (vmx/svm, kvm_intel/kvm_amd)",
        ),
        AccelChoice::Auto => (Accel::Kvm, "/dev/kvm runs hardware-virtualized guests"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARDWARE: HostVirt = HostVirt {
        kvm_device: true,
        hardware_module: true,
        pvm_module: false,
        cpu_flags: true,
    };

    #[test]
    fn kvm_only_where_a_stock_kernel_can_run() {
        assert_eq!(choose(AccelChoice::Auto, HARDWARE).0, Accel::Kvm);
        let pvm = HostVirt {
            hardware_module: false,
            pvm_module: true,
            cpu_flags: false,
            ..HARDWARE
        };
        let (accel, why) = choose(AccelChoice::Auto, pvm);
        assert_eq!(accel, Accel::Tcg);
        assert!(why.contains("PVM"), "{why}");
        let closed = HostVirt {
            kvm_device: false,
            ..HARDWARE
        };
        assert_eq!(choose(AccelChoice::Auto, closed).0, Accel::Tcg);
        assert_eq!(choose(AccelChoice::Tcg, HARDWARE).0, Accel::Tcg);
    }
}
