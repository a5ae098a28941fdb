//! The qemu target against a real VM from `make vm-image` (issue 24): a
//! kernel rule and a service rule fail at baseline, pass after a
//! known-good script and fail again after `loadvm`; 20 reverts (p50/p99
//! printed); a script that hangs, and one that powers the guest off.
//! One VM for all of it: a boot under TCG costs about 20 s.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{docker_with, sandbox_image, Agent};
use fleet_targets::{QemuTarget, QemuTargetConfig};

const DATASTREAM: &str = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml";
const PROFILE: &str = "xccdf_org.ssgproject.content_profile_standard";
const RULE_PREFIX: &str = "xccdf_org.ssgproject.content_rule_";
const T: Duration = Duration::from_secs(120);

/// `make vm-image`'s output (FLEET_VM_IMAGE_DIR, else the repo's `.fleet`).
fn vm_image_dir() -> PathBuf {
    let dir = std::env::var_os("FLEET_VM_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.fleet/vm-image"));
    assert!(
        dir.join("disk.qcow2").is_file(),
        "no VM image in {}: run `make vm-image`",
        dir.display()
    );
    dir
}

/// OpenSCAP's verdict on one rule, evaluated in the guest.
async fn verdict(target: &QemuTarget, rule: &str) -> &'static str {
    let script = format!(
        "oscap xccdf eval --profile {PROFILE} --rule {RULE_PREFIX}{rule} {DATASTREAM} >/dev/null 2>&1; echo rc=$?"
    );
    let out = target.exec(&script, T).await.expect("oscap runs");
    match out.output.trim() {
        "rc=0" => "pass",
        "rc=2" => "fail",
        other => panic!("oscap on {rule}: {other:?} ({out:?})"),
    }
}

async fn run(target: &QemuTarget, script: &str) -> String {
    let out = target.exec(script, T).await.expect("script runs");
    assert_eq!(out.exit_code, Some(0), "{script}: {out:?}");
    out.output
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test]
async fn a_vm_reaches_kernel_and_service_rules_and_loadvm_puts_it_back() {
    let docker = docker_with(&sandbox_image()).await;
    let agent = Agent::new();
    let run_dir = tempfile::Builder::new()
        .prefix("fvm")
        .tempdir_in("/tmp")
        .unwrap();
    let mut config = QemuTargetConfig::new(vm_image_dir(), run_dir.path(), agent.id.clone(), 0);
    config.sandbox_image = sandbox_image();
    let started = Instant::now();
    let target = QemuTarget::create(&docker, config)
        .await
        .expect("the VM boots");
    target.baseline().await.expect("savevm of the baseline");
    eprintln!(
        "boot+baseline {:.1} s (accel {})",
        started.elapsed().as_secs_f64(),
        target.accel().as_str()
    );
    assert!(target.health().await);

    // The guest is the sandbox's only peer: the sandbox has no network.
    let name = target.sandbox_name().to_owned();
    let inspect = docker.inspect_container(&name, None).await.unwrap();
    let mode = inspect.host_config.unwrap().network_mode.unwrap();
    assert_eq!(mode, "none");

    // A kernel rule: runtime value and sysctl.d, which a container lacks.
    let rule = "sysctl_kernel_randomize_va_space";
    run(&target, "sysctl -qw kernel.randomize_va_space=0").await;
    target.baseline().await.expect("baseline with ASLR off");
    assert_eq!(verdict(&target, rule).await, "fail");
    run(
        &target,
        "echo 'kernel.randomize_va_space = 2' >/etc/sysctl.d/60-fleet.conf && sysctl -q --system",
    )
    .await;
    assert_eq!(verdict(&target, rule).await, "pass");
    target.revert().await.expect("loadvm");
    assert_eq!(
        run(&target, "sysctl -n kernel.randomize_va_space")
            .await
            .trim(),
        "0"
    );
    assert_eq!(verdict(&target, rule).await, "fail");

    // A service rule: systemd in the guest.
    let rule = "service_cron_enabled";
    run(
        &target,
        "apt-get install -y -qq cron >/dev/null && systemctl disable --now cron.service 2>/dev/null",
    )
    .await;
    target
        .baseline()
        .await
        .expect("baseline with cron installed, disabled");
    assert_eq!(verdict(&target, rule).await, "fail");
    run(&target, "systemctl enable --now cron.service 2>/dev/null").await;
    assert_eq!(
        run(&target, "systemctl is-active cron").await.trim(),
        "active"
    );
    assert_eq!(verdict(&target, rule).await, "pass");
    target.revert().await.expect("loadvm");
    assert_eq!(
        run(&target, "systemctl is-active cron || true")
            .await
            .trim(),
        "inactive"
    );
    assert_eq!(verdict(&target, rule).await, "fail");

    // Revert reliability, and the guest's clock put right after each.
    let mut millis = Vec::new();
    for n in 0..20 {
        run(&target, &format!("echo {n} >/root/fleet-mark")).await;
        let t = Instant::now();
        target.revert().await.expect("loadvm");
        millis.push(t.elapsed().as_millis());
        let out = target
            .exec("test ! -e /root/fleet-mark && date +%s", T)
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(0), "revert {n} left the mark: {out:?}");
        let guest: u64 = out.output.trim().parse().unwrap();
        let host = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            guest.abs_diff(host) <= 5,
            "guest clock {guest}, host {host}"
        );
    }
    millis.sort_unstable();
    eprintln!(
        "vm revert: n={} p50={} ms p99={} ms",
        millis.len(),
        percentile(&millis, 0.5),
        percentile(&millis, 0.99)
    );

    // A script that hangs: the timeout kills it, the VM lives on.
    let out = target
        .exec("sleep 600", Duration::from_secs(3))
        .await
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    assert!(target.health().await);

    // A script that powers the guest off: named, and reverted away.
    let out = target.exec("poweroff -f", T).await.unwrap();
    let contained = out.contained.clone().unwrap_or_default();
    assert!(contained.contains("powered off"), "{out:?}");
    assert!(!target.health().await);
    target
        .revert()
        .await
        .expect("loadvm from a powered-off guest");
    assert!(target.health().await);
    assert_eq!(
        run(&target, "sysctl -n kernel.randomize_va_space")
            .await
            .trim(),
        "0"
    );

    // qemu dies under the agent: the VM restarts from its overlay.
    let pid = run(&target, "true").await;
    drop(pid);
    std::process::Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("guest={}", target.config().vm_name()),
        ])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!target.health().await);
    target.revert().await.expect("restart from the overlay");
    assert!(target.health().await);
    assert_eq!(
        run(&target, "sysctl -n kernel.randomize_va_space")
            .await
            .trim(),
        "0"
    );

    target.remove().await.unwrap();
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("guest={}", target.config().vm_name())])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "qemu left running");
}
