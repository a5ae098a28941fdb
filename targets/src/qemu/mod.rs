//! The qemu target (issue 24, in progress): VMs an agent owns, reverted by
//! `loadvm` of a baseline snapshot. So far the QMP client it drives them
//! with; the VM image is built by `make vm-image`.

mod qmp;

pub use qmp::Qmp;
