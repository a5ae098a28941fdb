//! `harden --inventory` against a VM host (issue 24): a qemu VM from
//! `make vm-image` whose sshd the agents' SSH sandboxes reach over an
//! internal Docker network, with `fleet-vm savevm`/`loadvm` as the host's
//! snapshot and revert commands. Two kernel rules a container cannot hold
//! are applied from `main`'s bundle; a fresh `oscap` scan by the test
//! agrees with the fleet's after-scan; the inventory's revert command puts
//! the VM back to before the rollout.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleet_common::host::HostRow;
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::procs::{bin, free_port};
use fleet_tests::services::vm_image_dir;
use fleet_tests::ssh_hosts::{parse_oscap_text, remove_network, run, try_run};

const PACK: &str = "ssg-debian11-standard";
const DATASTREAM: &str = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml";
const PROFILE: &str = "xccdf_org.ssgproject.content_profile_standard";
const PREFIX: &str = "xccdf_org.ssgproject.content_rule_";
const RULES: [&str; 2] = [
    "sysctl_kernel_randomize_va_space",
    "sysctl_fs_suid_dumpable",
];

/// The VM host: qemu with its sshd forwarded to the host's loopback, and
/// a relay from `gateway:port`, the gateway of an internal network only
/// the sandboxes join. (qemu's `restrict=on` drops the guest's replies to
/// any source but the loopback it maps to its gateway, so the forward
/// itself cannot listen on the bridge.)
struct VmHost {
    qemu: Child,
    network: String,
    gateway: String,
    port: u16,
    qmp: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl VmHost {
    fn start(tag: &str) -> VmHost {
        let image = vm_image_dir();
        let dir = tempfile::Builder::new()
            .prefix("fleet-vmhost")
            .tempdir()
            .unwrap();
        let network = format!("fleet-vmhost-{tag}");
        let _ = try_run(&["docker", "network", "rm", &network], None);
        run(
            &["docker", "network", "create", "--internal", &network],
            None,
        );
        let gateway = run(
            &[
                "docker",
                "network",
                "inspect",
                "-f",
                "{{(index .IPAM.Config 0).Gateway}}",
                &network,
            ],
            None,
        )
        .trim()
        .to_owned();
        let overlay = dir.path().join("overlay.qcow2");
        run(
            &[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                image.join("disk.qcow2").to_str().unwrap(),
                overlay.to_str().unwrap(),
            ],
            None,
        );
        let port = free_port();
        let loopback_port = free_port();
        // Plain threads: the test's own blocking ssh calls must not stall it.
        let listener = std::net::TcpListener::bind((gateway.as_str(), port))
            .expect("relay listens on the network's gateway");
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let Ok(guest) = std::net::TcpStream::connect(("127.0.0.1", loopback_port)) else {
                    continue;
                };
                let (mut a, mut b) = (inbound.try_clone().unwrap(), guest.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
                let (mut a, mut b) = (guest, inbound);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        let qmp = dir.path().join("qmp.sock");
        let boot_args = std::fs::read_to_string(image.join("boot.args")).unwrap();
        let qemu = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-m",
                "1024",
                "-smp",
                "1",
                "-nodefaults",
                "-display",
                "none",
            ])
            .args(["-no-reboot", "-kernel"])
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initrd.img"))
            .args(["-append", boot_args.trim()])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{loopback_port}-:22"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0", "-serial", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("qemu starts (make deps)");
        VmHost {
            qemu,
            network,
            gateway,
            port,
            qmp,
            _dir: dir,
        }
    }

    /// `bash -c script` in the guest over ssh from the test's host.
    fn ssh(&self, script: &str) -> Result<String, String> {
        let image = vm_image_dir();
        try_run(
            &[
                "ssh",
                "-i",
                image.join("id_ed25519").to_str().unwrap(),
                "-o",
                "BatchMode=yes",
                "-o",
                "HostKeyAlias=fleet-vm",
                "-o",
                &format!("UserKnownHostsFile={}", image.join("known_hosts").display()),
                "-o",
                "ConnectTimeout=5",
                "-p",
                &self.port.to_string(),
                &format!("root@{}", self.gateway),
                script,
            ],
            None,
        )
    }

    async fn wait_ssh(&mut self) {
        let mut last = String::new();
        for _ in 0..120 {
            match self.ssh("true") {
                Ok(_) => return,
                Err(e) => last = e,
            }
            if let Ok(Some(status)) = self.qemu.try_wait() {
                panic!("qemu exited: {status}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("the VM host never answered ssh: {last}");
    }

    /// Statuses of [`RULES`] by a fresh oscap scan run by the test.
    fn oscap(&self) -> Vec<(String, String)> {
        let selection: String = RULES
            .iter()
            .map(|r| format!(" --rule {PREFIX}{r}"))
            .collect();
        let out = self
            .ssh(&format!(
                "oscap xccdf eval --skip-valid --profile {PROFILE}{selection} {DATASTREAM} 2>/dev/null; true"
            ))
            .expect("oscap over ssh");
        let mut found = parse_oscap_text(&out, PREFIX);
        found.sort();
        found
    }

    fn vm_command(&self, verb: &str) -> String {
        format!(
            "[\"{}\", \"{verb}\", \"--qmp\", \"{}\", \"fleet-pre-harden\"]",
            bin("fleet-vm").display(),
            self.qmp.display()
        )
    }
}

impl Drop for VmHost {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        remove_network(&self.network);
    }
}

fn inventory(vm: &VmHost, dir: &Path) -> std::path::PathBuf {
    let image = vm_image_dir();
    let known = std::fs::read_to_string(image.join("known_hosts")).unwrap();
    let host_key: String = known
        .split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let path = dir.join("inventory.toml");
    std::fs::write(
        &path,
        format!(
            "[defaults]\nkey = \"{}\"\nnetwork = \"{}\"\n\n[[host]]\nname = \"vm1\"\naddress = \"{}\"\nport = {}\nhost_key = \"{host_key}\"\nsnapshot = {}\nrevert = {}\n",
            image.join("id_ed25519").display(),
            vm.network,
            vm.gateway,
            vm.port,
            vm.vm_command("savevm"),
            vm.vm_command("loadvm"),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harden_rolls_kernel_rules_out_to_a_vm_host_with_savevm_as_its_snapshot() {
    let image =
        std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into());
    let fleet = Fleet::start(FleetOpts {
        agents: 1,
        target_image: Some(image),
        auto_dream: false,
        ..FleetOpts::default()
    })
    .await;
    fleet.commit_on_main(
        &[
            (
                "skills/sysctl_kernel_randomize_va_space.sh",
                b"echo 'kernel.randomize_va_space = 2' >/etc/sysctl.d/60-fleet-aslr.conf\nsysctl -q --system\n".as_slice(),
            ),
            (
                "skills/sysctl_fs_suid_dumpable.sh",
                b"echo 'fs.suid_dumpable = 0' >/etc/sysctl.d/60-fleet-dump.conf\nsysctl -q --system\n".as_slice(),
            ),
        ],
        "test: verified kernel skills",
    );
    let mut vm = VmHost::start(&fleet.db.schema[2..14]);
    vm.wait_ssh().await;
    let before = vm.oscap();
    assert_eq!(
        before,
        RULES
            .iter()
            .map(|r| (r.to_string(), "fail".to_string()))
            .rev()
            .collect::<Vec<_>>(),
        "both rules fail on the fresh VM"
    );

    let dir = tempfile::tempdir().unwrap();
    let inventory = inventory(&vm, dir.path());
    let inv = inventory.to_str().unwrap();
    let (ok, out, err) = fleet.cli(&["harden", "--inventory", inv, "--skill-pack", PACK]);
    eprintln!("{out}{err}");
    assert!(ok, "harden failed: {out}{err}");
    let run_id = err
        .split("harden: run ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {err}"))
        .to_owned();
    let rows: Vec<HostRow> = fleet.api_get(&format!("/api/v1/runs/{run_id}/hosts")).await;
    let row = &rows[0];
    assert_eq!(row.outcome, "fixed", "{row:?}");
    let report = row.report.as_ref().expect("a host report");
    for rule in RULES {
        assert!(
            report.passing_after.iter().any(|p| p == rule),
            "{rule}: {report:?}"
        );
        assert!(
            !report.passing_before.iter().any(|p| p == rule),
            "{rule}: {report:?}"
        );
    }
    // A fresh scan by the test agrees with the fleet's after-scan.
    let after = vm.oscap();
    for (rule, status) in &after {
        let fleet_says = report.passing_after.iter().any(|p| p == rule);
        assert_eq!(
            fleet_says,
            status == "pass",
            "{rule}: test {status}, fleet {fleet_says}"
        );
    }
    assert!(after.iter().all(|(_, s)| s == "pass"), "{after:?}");

    // The snapshot the rollout took first is the VM before it: the
    // inventory's revert command goes back there.
    run(
        &[
            bin("fleet-vm").to_str().unwrap(),
            "loadvm",
            "--qmp",
            vm.qmp.to_str().unwrap(),
            "fleet-pre-harden",
        ],
        None,
    );
    vm.wait_ssh().await;
    assert!(
        vm.oscap().iter().all(|(_, s)| s == "fail"),
        "loadvm went back to before the rollout"
    );
    fleet.shutdown().await;
}
