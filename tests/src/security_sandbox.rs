//! Attacks a Worker script might make, run against one real Docker target
//! through the `fleet-targets` API, each judged contained or not (DESIGN
//! T1): the summary behind `make security`, and the assertion of
//! `tests/tests/security_sandbox.rs`.
//!
//! Every attack runs on the same target; the ones that damage it are
//! followed by a revert, and the target must answer again afterwards, so
//! "contained" always includes "the agent could carry on". About 30 s on
//! the 2-core dev machine; the whole run is kept under a minute.

use std::time::{Duration, Instant};

use fleet_common::script_screen;
use fleet_targets::{
    connect_docker, kept_capability_mask, Docker, DockerTarget, DockerTargetConfig, ExecOutcome,
};

/// How one attack went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackOutcome {
    pub name: &'static str,
    /// The attack failed and the target (or the host) is as it should be.
    pub contained: bool,
    /// Why, in words: what stopped it, or what got through.
    pub reason: String,
}

/// Short timeouts: every attack here either fails at once or is cut off.
const QUICK: Duration = Duration::from_secs(10);

/// A script that passes the screen yet removes `/usr` and `/etc`: the
/// screen sees only a base64 blob piped to a shell.
pub const SLIPPED_DESTRUCTION: &str =
    "echo cm0gLXJmIC0tbm8tcHJlc2VydmUtcm9vdCAvdXNyIC9ldGMK | base64 -d | bash; exit 0";

/// Spellings of `rm -rf /` that never reach a target.
pub const SCREENED_REMOVALS: &[&str] = &[
    "rm -rf /",
    "rm -rf --no-preserve-root /",
    "rm -rf //",
    "rm -rf \"/\"",
    "\\rm -Rf /*",
    "/bin/rm --recursive --force -- /",
    "rm -rf --no-preserve-root /usr",
];

/// Runs every attack against one fresh target (image `FLEET_TARGET_IMAGE`,
/// default `fleet-target:bullseye`) and removes it afterwards. A setup
/// failure is one outcome named `setup`, not contained.
pub async fn run_sandbox_attacks() -> Vec<AttackOutcome> {
    let started = Instant::now();
    let docker = match connect_docker() {
        Ok(docker) => docker,
        Err(e) => return vec![setup_failed(format!("docker: {e}"))],
    };
    let agent = format!("sec{}", uuid::Uuid::new_v4().simple());
    let mut config = DockerTargetConfig::new(&agent, 0);
    if let Ok(image) = std::env::var("FLEET_TARGET_IMAGE") {
        config.image = image;
    }
    let target = match DockerTarget::create(&docker, config).await {
        Ok(target) => target,
        Err(e) => {
            return vec![setup_failed(format!(
                "target: {e} (run `make target-image`)"
            ))]
        }
    };
    if let Err(e) = target.baseline().await {
        let _ = target.remove().await;
        return vec![setup_failed(format!("baseline: {e}"))];
    }
    let mut outcomes = vec![
        screened_removals(),
        network(&target).await,
        docker_socket(&target).await,
        setuid_escalation(&target).await,
        capabilities(&target).await,
        memory_hog(&target).await,
        fork_bomb(&target).await,
        endless_output(&target).await,
        destruction_inside(&docker, &target).await,
    ];
    if let Err(e) = target.remove().await {
        outcomes.push(AttackOutcome {
            name: "cleanup",
            contained: false,
            reason: format!("target not removed: {e}"),
        });
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sandbox attacks done"
    );
    outcomes
}

fn setup_failed(reason: String) -> AttackOutcome {
    AttackOutcome {
        name: "setup",
        contained: false,
        reason,
    }
}

fn outcome(name: &'static str, contained: bool, reason: impl Into<String>) -> AttackOutcome {
    AttackOutcome {
        name,
        contained,
        reason: reason.into(),
    }
}

/// Runs `script`; an error is an outcome too (the caller words it).
async fn run(
    target: &DockerTarget,
    script: &str,
    timeout: Duration,
) -> Result<ExecOutcome, String> {
    target
        .exec(script, timeout)
        .await
        .map_err(|e| format!("exec failed: {e}"))
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// Reverts and checks the target answers; the reason's tail.
async fn back_to_baseline(target: &DockerTarget) -> Result<(), String> {
    target
        .revert()
        .await
        .map_err(|e| format!("revert failed: {e}"))?;
    if target.health().await {
        Ok(())
    } else {
        Err("target unhealthy after the revert".into())
    }
}

fn screened_removals() -> AttackOutcome {
    let mut rules = Vec::new();
    for script in SCREENED_REMOVALS {
        match script_screen::screen(script) {
            Err(refusal) => rules.push(refusal.rule),
            Ok(()) => {
                return outcome(
                    "rm_rf_root_screened",
                    false,
                    format!("{script:?} passed the screen"),
                )
            }
        }
    }
    rules.dedup();
    outcome(
        "rm_rf_root_screened",
        true,
        format!(
            "{} spellings refused before running ({})",
            SCREENED_REMOVALS.len(),
            rules.join(", ")
        ),
    )
}

async fn network(target: &DockerTarget) -> AttackOutcome {
    let name = "network";
    let attempts = [
        "timeout 5 bash -c 'exec 3<>/dev/tcp/1.1.1.1/80'",
        "timeout 5 getent hosts deb.debian.org",
        "timeout 5 bash -c 'exec 3<>/dev/udp/8.8.8.8/53 && echo x >&3'",
    ];
    let mut why = Vec::new();
    for script in attempts {
        match run(target, script, QUICK).await {
            Ok(out) if out.exit_code == Some(0) => {
                return outcome(name, false, format!("{script:?} succeeded: {}", out.output))
            }
            Ok(out) => why.push(match first_line(&out.output) {
                "" => format!("exit {:?}, no answer", out.exit_code),
                line => line.to_owned(),
            }),
            Err(e) => return outcome(name, false, e),
        }
    }
    outcome(name, true, format!("no route out: {}", why.join(" | ")))
}

async fn docker_socket(target: &DockerTarget) -> AttackOutcome {
    let name = "docker_socket";
    // Everything that would reach the engine: its sockets, its CLI, its
    // TCP ports on the default bridge's gateway and on loopback.
    let script = r#"
for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock; do
  test -e "$s" && echo "FOUND socket $s"
done
find / -xdev -type s 2>/dev/null | grep -i -e docker -e containerd | sed 's/^/FOUND socket /'
command -v docker >/dev/null && echo "FOUND docker cli"
if command -v curl >/dev/null; then
  curl -s --max-time 3 --unix-socket /var/run/docker.sock http://d/version && echo "FOUND api"
fi
for host in 172.17.0.1 127.0.0.1; do
  for port in 2375 2376; do
    timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null && echo "FOUND tcp $host:$port"
  done
done
grep -c . /proc/net/route | sed 's/^/routes+header: /'
exit 0
"#;
    match run(target, script, QUICK).await {
        Ok(out) if out.output.contains("FOUND") => outcome(name, false, out.output),
        Ok(out) if out.exit_code == Some(0) => outcome(
            name,
            true,
            format!(
                "no engine socket, no docker CLI, ports 2375/2376 unreachable ({})",
                first_line(&out.output)
            ),
        ),
        Ok(out) => outcome(name, false, format!("probe failed: {}", out.output)),
        Err(e) => outcome(name, false, e),
    }
}

async fn setuid_escalation(target: &DockerTarget) -> AttackOutcome {
    let name = "setuid_escalation";
    // A setuid-root `id` run by nobody would report euid=0 without
    // no-new-privileges.
    let script = "chmod u+s /usr/bin/id && su nobody -s /bin/bash -c '/usr/bin/id; grep -E \"^(NoNewPrivs|CapEff)\" /proc/self/status'";
    let out = match run(target, script, QUICK).await {
        Ok(out) => out,
        Err(e) => return outcome(name, false, e),
    };
    let text = out.output.replace('\n', " ");
    let gained = text.contains("euid=0");
    let nnp = text.contains("NoNewPrivs:\t1") || text.contains("NoNewPrivs: 1");
    let ran = text.contains("uid=65534");
    let reverted = back_to_baseline(target).await;
    match (ran, gained, nnp, reverted) {
        (true, false, true, Ok(())) => outcome(
            name,
            true,
            "a setuid-root binary run by nobody stays nobody (no-new-privileges)",
        ),
        (_, _, _, Err(e)) => outcome(name, false, e),
        _ => outcome(name, false, format!("exit {:?}: {text}", out.exit_code)),
    }
}

async fn capabilities(target: &DockerTarget) -> AttackOutcome {
    let name = "capabilities";
    let script = r#"
mknod /tmp/fleet-null c 1 3 2>&1 && echo "GOT mknod"
mount -t tmpfs none /mnt 2>&1 && echo "GOT mount"
chroot / true 2>&1 && echo "GOT chroot"
ip link set lo down 2>&1 && echo "GOT net_admin"
grep '^CapBnd:' /proc/self/status
exit 0
"#;
    let out = match run(target, script, QUICK).await {
        Ok(out) => out,
        Err(e) => return outcome(name, false, e),
    };
    let bounding = out
        .output
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    let want = kept_capability_mask();
    if out.output.contains("GOT ") {
        outcome(name, false, out.output)
    } else if bounding != Some(want) {
        outcome(
            name,
            false,
            format!("bounding set {bounding:x?}, want {want:#x}"),
        )
    } else {
        outcome(
            name,
            true,
            format!("mknod, mount, chroot, net_admin refused; bounding set {want:#x}"),
        )
    }
}

async fn memory_hog(target: &DockerTarget) -> AttackOutcome {
    let name = "memory_hog";
    // `tail` keeps a whole "line" of zeros: it grows until the limit.
    let out = match run(
        target,
        "head -c 8000m /dev/zero | tail",
        Duration::from_secs(60),
    )
    .await
    {
        Ok(out) => out,
        Err(e) => return outcome(name, false, e),
    };
    let healthy = target.health().await;
    let reason = out.contained.clone().unwrap_or_default();
    let reverted = back_to_baseline(target).await;
    if reason.contains("out of memory") && healthy && reverted.is_ok() {
        outcome(
            name,
            true,
            format!("exit {:?}, {reason}; target answered", out.exit_code),
        )
    } else {
        outcome(
            name,
            false,
            format!(
                "exit {:?}, contained {:?}, healthy {healthy}, {reverted:?}",
                out.exit_code, out.contained
            ),
        )
    }
}

async fn fork_bomb(target: &DockerTarget) -> AttackOutcome {
    let name = "fork_bomb";
    let out = match run(
        target,
        "bomb() { bomb | bomb & }; bomb; sleep 600",
        Duration::from_secs(5),
    )
    .await
    {
        Ok(out) => out,
        Err(e) => return outcome(name, false, e),
    };
    let reason = out.contained.clone().unwrap_or_default();
    match back_to_baseline(target).await {
        Ok(()) if out.timed_out && !reason.is_empty() => {
            outcome(name, true, format!("{reason}; target back after revert"))
        }
        Ok(()) => outcome(name, false, format!("not stopped: {out:?}")),
        Err(e) => outcome(name, false, format!("{reason}; {e}")),
    }
}

async fn endless_output(target: &DockerTarget) -> AttackOutcome {
    let name = "endless_output";
    let cap = target.config().output_cap_bytes;
    let out = match run(target, "yes fleet", Duration::from_secs(3)).await {
        Ok(out) => out,
        Err(e) => return outcome(name, false, e),
    };
    let reason = out.contained.clone().unwrap_or_default();
    let reverted = back_to_baseline(target).await;
    if out.timed_out && out.truncated && out.output.len() <= cap && reverted.is_ok() {
        outcome(
            name,
            true,
            format!("{reason}; {} bytes kept", out.output.len()),
        )
    } else {
        outcome(
            name,
            false,
            format!(
                "timed out {}, truncated {}, {} bytes, {reverted:?}",
                out.timed_out,
                out.truncated,
                out.output.len()
            ),
        )
    }
}

async fn destruction_inside(docker: &Docker, target: &DockerTarget) -> AttackOutcome {
    let name = "destruction_in_container";
    if script_screen::screen(SLIPPED_DESTRUCTION).is_err() {
        return outcome(name, false, "the screen caught the blob; nothing to test");
    }
    // Nothing of the host is in the container to destroy.
    let mounts = match docker
        .inspect_container(target.container_name(), None)
        .await
    {
        Ok(inspect) => inspect.mounts.unwrap_or_default().len(),
        Err(e) => return outcome(name, false, format!("inspect: {e}")),
    };
    let canary = std::env::temp_dir().join(format!("fleet-canary-{}", std::process::id()));
    if let Err(e) = std::fs::write(&canary, b"host") {
        return outcome(name, false, format!("canary: {e}"));
    }
    let ran = run(target, SLIPPED_DESTRUCTION, Duration::from_secs(60)).await;
    // The shell itself is gone now: the target cannot run anything.
    let broken = !target.health().await;
    let host_intact = std::fs::read(&canary).ok().as_deref() == Some(&b"host"[..]);
    let _ = std::fs::remove_file(&canary);
    let reverted = back_to_baseline(target).await;
    let restored = run(
        target,
        "test -x /usr/bin/apt-get && test -s /etc/passwd && echo restored",
        QUICK,
    )
    .await
    .map(|out| out.output.contains("restored"))
    .unwrap_or(false);
    let contained = mounts == 0 && host_intact && reverted.is_ok() && restored;
    let reason = if contained {
        format!(
            "/usr and /etc removed inside the container only (no host mounts; target broken: {broken}); revert restored it"
        )
    } else {
        format!(
            "mounts {mounts}, host intact {host_intact}, exec {:?}, revert {reverted:?}, restored {restored}",
            ran.map(|o| o.exit_code)
        )
    };
    outcome(name, contained, reason)
}
