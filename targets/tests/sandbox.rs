//! The container's sandbox against hostile scripts (DESIGN T1): only the
//! capabilities rules need, memory and CPU limits enforced and reported,
//! no way to the network or the Docker engine, and destruction that slips
//! past the screen confined to the container and undone by a revert (T3).

mod common;

use std::time::Duration;

use common::{docker_with, target_image, Agent};
use fleet_targets::{kept_capability_mask, DockerTarget, KEPT_CAPABILITIES};

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_capabilities_left_are_the_ones_packages_and_accounts_need() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    let inspect = docker
        .inspect_container(target.container_name(), None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.cap_add.unwrap_or_default(),
        KEPT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect::<Vec<_>>()
    );
    let status = target
        .exec("grep -E '^Cap(Bnd|Eff):' /proc/self/status", T)
        .await
        .unwrap();
    for line in status.output.lines() {
        let hex = line.split_whitespace().nth(1).unwrap();
        assert_eq!(
            u64::from_str_radix(hex, 16).unwrap(),
            kept_capability_mask(),
            "{line}"
        );
    }

    // What rules do: packages from the offline repo (maintainer scripts
    // included), accounts, owners and modes, su.
    let work = target
        .exec(
            "set -e
DEBIAN_FRONTEND=noninteractive apt-get install -y -q cron >/dev/null
dpkg -s cron | grep -q 'Status: install ok installed'
useradd -r fleet-svc
install -d -o fleet-svc -m 0750 /var/lib/fleet-svc
chown root:crontab /usr/bin/crontab && chmod 2755 /usr/bin/crontab
su fleet-svc -s /bin/sh -c 'id -un'
test -z \"$(dpkg --audit 2>&1)\"",
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    assert_eq!(work.exit_code, Some(0), "{}", work.output);
    assert!(work.output.contains("fleet-svc"), "{}", work.output);
    assert_eq!(work.contained, None, "{work:?}");

    // What they never need.
    for (what, script) in [
        ("mknod", "mknod /tmp/fleet-null c 1 3"),
        ("mount", "mount -t tmpfs none /mnt"),
        ("chroot", "chroot / true"),
        (
            "raw socket",
            "exec 3<>/dev/udp/127.0.0.1/9 && ping -c1 -W1 127.0.0.1",
        ),
    ] {
        let out = target.exec(script, T).await.unwrap();
        assert_ne!(out.exit_code, Some(0), "{what} worked: {}", out.output);
    }
    target.remove().await.unwrap();
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed_inside_its_limit_and_the_reason_is_given() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let mut config = agent.config(0);
    config.memory_bytes = 128 * 1024 * 1024;
    let target = DockerTarget::create(&docker, config).await.unwrap();
    target.baseline().await.unwrap();

    // `tail` keeps one endless "line" of zeros in memory.
    let hog = target
        .exec("echo start; head -c 4000m /dev/zero | tail", T)
        .await
        .unwrap();
    eprintln!("memory hog: {hog:?}");
    assert!(!hog.timed_out, "{hog:?}");
    assert_eq!(hog.exit_code, Some(137), "SIGKILLed: {hog:?}");
    let reason = hog.contained.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("killed: out of memory (limit 128 MiB"),
        "{reason}"
    );
    // Only the hog died: the container runs on, unreverted, and the next
    // script is not blamed for it.
    assert!(target.health().await);
    let next = target.exec("echo fine", T).await.unwrap();
    assert_eq!(next.output, "fine\n");
    assert_eq!(next.contained, None);
    // After a revert the counters start again from the new container.
    target.revert().await.unwrap();
    let again = target
        .exec("head -c 4000m /dev/zero | tail", T)
        .await
        .unwrap();
    assert!(
        again
            .contained
            .as_deref()
            .is_some_and(|r| r.contains("1 process killed")),
        "{again:?}"
    );
    target.remove().await.unwrap();
}

/// A script that starts a fork bomb in the background and exits: what it
/// left at the pid limit is killed before anything else runs, and the
/// outcome says why.
#[tokio::test]
async fn a_fork_bomb_left_behind_is_killed_and_named() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    let out = target
        .exec("bomb() { bomb | bomb & }; bomb; echo lit", T)
        .await
        .unwrap();
    eprintln!(
        "fork bomb left behind: {:?} {:?}",
        out.exit_code, out.contained
    );
    assert!(!out.timed_out, "{out:?}");
    let reason = out.contained.as_deref().unwrap_or_default();
    assert!(
        reason.contains("pid limit reached (256 processes)")
            || reason.contains("the container was killed"),
        "{reason}"
    );
    if target.health().await {
        let strays = common::stray_processes(&target).await;
        assert!(strays.is_empty(), "{} left running", strays.len());
    }
    target.revert().await.unwrap();
    let next = target.exec("echo next", T).await.unwrap();
    assert_eq!(next.output, "next\n");
    assert_eq!(next.contained, None);
    target.remove().await.unwrap();
}

/// The CPU quota is in the container's cgroup, and a script with more busy
/// threads than the quota gets no more CPU time than it allows. Only an
/// upper bound is checked: a loaded machine gives less, never more.
#[tokio::test]
async fn cpu_use_is_capped_at_the_configured_share() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let mut config = agent.config(0);
    config.cpus = 0.5;
    let target = DockerTarget::create(&docker, config).await.unwrap();
    target.baseline().await.unwrap();

    let quota = target
        .exec(
            "if [ -r /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max; \
             else echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); fi",
            T,
        )
        .await
        .unwrap();
    let numbers: Vec<f64> = quota
        .output
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 2, "{}", quota.output);
    assert!(
        (numbers[0] / numbers[1] - 0.5).abs() < 1e-9,
        "{}",
        quota.output
    );

    // CPU time of the container's cgroup (ns) around three busy loops.
    let busy = target
        .exec(
            r#"usage() { if [ -r /sys/fs/cgroup/cpu.stat ]; then while read -r k v; do [ "$k" = usage_usec ] && echo $((v * 1000)); done < /sys/fs/cgroup/cpu.stat; else cat /sys/fs/cgroup/cpuacct/cpuacct.usage; fi; }
u0=$(usage); t0=$(date +%s%N)
for i in 1 2 3; do timeout 3 bash -c 'while :; do :; done' & done; wait
u1=$(usage); t1=$(date +%s%N)
echo $((u1 - u0)) $((t1 - t0))"#,
            T,
        )
        .await
        .unwrap();
    let figures: Vec<f64> = busy
        .output
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (used, wall) = (figures[0] / 1e9, figures[1] / 1e9);
    eprintln!(
        "3 busy loops at cpus=0.5: {used:.2} s of CPU in {wall:.2} s ({:.2} CPUs)",
        used / wall
    );
    // One period (100 ms) of burst and a little accounting slack.
    assert!(
        used <= 0.5 * wall * 1.1 + 0.2,
        "{used:.2} s CPU in {wall:.2} s"
    );
    target.remove().await.unwrap();
}

#[tokio::test]
async fn neither_the_network_nor_the_docker_engine_can_be_reached() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    let inspect = docker
        .inspect_container(target.container_name(), None)
        .await
        .unwrap();
    assert_eq!(inspect.mounts.unwrap_or_default().len(), 0, "host mounts");

    let probe = target
        .exec(
            r#"
for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock; do
  test -e "$s" && echo "FOUND $s"
done
find / -xdev -type s 2>/dev/null | grep -i -e docker -e containerd | sed 's/^/FOUND /'
command -v docker && echo "FOUND docker cli"
command -v curl && curl -s --max-time 3 --unix-socket /var/run/docker.sock http://d/version && echo "FOUND api"
command -v socat && socat -T3 - UNIX-CONNECT:/var/run/docker.sock </dev/null && echo "FOUND socat"
for host in 172.17.0.1 127.0.0.1; do
  for port in 2375 2376; do
    timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null && echo "FOUND tcp $host:$port"
  done
done
timeout 3 bash -c 'exec 3<>/dev/tcp/1.1.1.1/80' 2>/dev/null && echo "FOUND internet"
timeout 3 getent hosts deb.debian.org && echo "FOUND dns"
sed 1d /proc/net/route | grep . && echo "FOUND route"
exit 0
"#,
            T,
        )
        .await
        .unwrap();
    assert_eq!(probe.exit_code, Some(0), "{}", probe.output);
    assert!(!probe.output.contains("FOUND"), "{}", probe.output);
    target.remove().await.unwrap();
}

/// Defence in depth behind the script screen: a `rm -rf /` the screen
/// cannot see (built at run time) wipes the container, not the host, and
/// the revert brings the target back for the next lease.
#[tokio::test]
async fn destruction_that_slips_past_the_screen_stays_in_the_container_and_is_reverted() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    let canary = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(canary.path(), b"host").unwrap();

    // "rm -rf --no-preserve-root /" in base64: the screen sees a blob.
    let script =
        "echo cm0gLXJmIC0tbm8tcHJlc2VydmUtcm9vdCAvCg== | base64 -d | bash; find / -xdev -delete";
    let wiped = target.exec(script, Duration::from_secs(120)).await;
    match &wiped {
        Ok(out) => eprintln!(
            "rm -rf / inside: exit {:?}, contained {:?}",
            out.exit_code, out.contained
        ),
        Err(error) => eprintln!("rm -rf / inside: {error}"),
    }
    assert_eq!(std::fs::read(canary.path()).unwrap(), b"host");
    assert!(!target.health().await, "a wiped container still answers");

    target.revert().await.unwrap();
    assert!(target.health().await);
    let back = target
        .exec(
            "test -x /usr/bin/apt-get && test -s /etc/passwd && oscap --version >/dev/null && echo back",
            T,
        )
        .await
        .unwrap();
    assert_eq!(back.output, "back\n");
    // And again: the baseline itself was never touched.
    let again = target.exec("rm -rf --no-preserve-root /usr", T).await;
    assert!(again.is_ok(), "{again:?}");
    target.revert().await.unwrap();
    assert!(target.health().await);
    target.remove().await.unwrap();
}
