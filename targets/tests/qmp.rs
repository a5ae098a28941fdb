//! The QMP client against a real qemu (TCG, no guest OS: the firmware
//! alone is a machine whose state can be saved and loaded): capabilities,
//! status, `savevm`, `loadvm`, a monitor error, `quit`. The revert of a
//! booted guest is the qemu target's test (issue 24).

use std::process::Stdio;
use std::time::{Duration, Instant};

use fleet_targets::Qmp;
use tokio::process::Command;

const QEMU: &str = "qemu-system-x86_64";

#[tokio::test]
async fn a_snapshot_is_saved_listed_and_loaded_through_qmp() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .status()
        .expect("qemu-img is installed (make deps)");
    assert!(made.success());
    let socket = dir.path().join("qmp.sock");
    let mut qemu = Command::new(QEMU)
        .args([
            "-accel",
            "tcg",
            "-machine",
            "q35",
            "-m",
            "64",
            "-nodefaults",
        ])
        .args(["-display", "none", "-serial", "none", "-no-reboot"])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", disk.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{QEMU} does not start ({e}): run `make deps`"));

    let mut qmp = Qmp::connect(&socket, Duration::from_secs(20))
        .await
        .expect("qemu's QMP socket answers");
    assert_eq!(qmp.status().await.unwrap(), "running");
    qmp.savevm("baseline").await.expect("savevm");
    let listed = qmp.hmp("info snapshots").await.unwrap();
    assert!(listed.contains("baseline"), "{listed}");

    let started = Instant::now();
    qmp.loadvm("baseline").await.expect("loadvm");
    eprintln!("loadvm took {} ms", started.elapsed().as_millis());
    assert_eq!(qmp.status().await.unwrap(), "running");

    let err = qmp
        .loadvm("no-such-snapshot")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-snapshot"), "{err}");
    assert!(
        qmp.loadvm("bad tag; quit").await.is_err(),
        "tags are plain words"
    );
    // A failed load leaves the machine stopped mid-restore; loading the
    // baseline again and continuing brings it back (the qemu target's
    // revert does this before restarting the VM from its overlay).
    let after_failure = qmp.status().await.unwrap();
    assert_ne!(after_failure, "running");
    qmp.loadvm("baseline")
        .await
        .expect("loadvm after a failed one");
    if qmp.status().await.unwrap() != "running" {
        qmp.execute("cont", None).await.expect("cont");
    }
    assert_eq!(qmp.status().await.unwrap(), "running", "usable again");

    qmp.quit().await.expect("quit");
    let status = tokio::time::timeout(Duration::from_secs(20), qemu.wait())
        .await
        .expect("qemu exits after quit")
        .unwrap();
    assert!(status.success(), "{status}");
}
