//! The SSH target end to end (DESIGN T1, T6): a "VM" container running
//! sshd on an internal Docker network, the sandbox on the same network,
//! host keys checked, the revert command run on the host.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::CreateContainerOptions;
use common::{docker_with, sandbox_image, target_image, Agent};
use fleet_targets::{SshTarget, SshTargetConfig, TargetError, LABEL_AGENT, LABEL_ROLE};

const T: Duration = Duration::from_secs(60);

/// Runs a host command; panics with its output unless it succeeds.
fn host(argv: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{argv:?}: {error}"));
    if let Some(bytes) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{argv:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn keygen(path: &Path) -> String {
    host(
        &[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "fleet-test",
            "-f",
            path.to_str().unwrap(),
        ],
        None,
    );
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

/// (Re)starts sshd in the VM with host key `$1`.
const START_SSHD: &str = r#"
if [ -s /run/sshd.pid ]; then
  pid=$(cat /run/sshd.pid); kill "$pid" 2>/dev/null
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
mkdir -p /run/sshd && /usr/sbin/sshd -h "$1" -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no
"#;

/// The VM: a container on `network` with sshd, root's key authorised,
/// host key `host_key` (and a second one, `/etc/ssh/other_key`, to turn
/// the host key wrong on purpose).
async fn start_vm(docker: &bollard::Docker, agent: &Agent, network: &str, dir: &Path) -> String {
    let name = format!("fleet-vm-{}", agent.id);
    let body = ContainerCreateBody {
        image: Some(target_image()),
        entrypoint: Some(vec!["sleep".into()]),
        cmd: Some(vec!["infinity".into()]),
        labels: Some(HashMap::from([(LABEL_AGENT.to_string(), agent.id.clone())])),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_string(),
                EndpointSettings::default(),
            )])),
        }),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_string()),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    docker.create_container(Some(options), body).await.unwrap();
    docker.start_container(&name, None).await.unwrap();

    // The real target image installs sshd from its offline repository.
    host(
        &[
            "docker", "exec", &name, "sh", "-c",
            "command -v sshd >/dev/null || test -x /usr/sbin/sshd || \
             (DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; })",
        ],
        None,
    );
    let copy = |from: &Path, to: &str, mode: &str| {
        let bytes = std::fs::read(from).unwrap();
        host(
            &[
                "docker",
                "exec",
                "-i",
                &name,
                "sh",
                "-c",
                &format!("mkdir -p \"$(dirname {to})\" && cat > {to} && chmod {mode} {to}"),
            ],
            Some(&bytes),
        );
    };
    copy(&dir.join("host_key"), "/etc/ssh/fleet_host_key", "600");
    copy(&dir.join("other_key"), "/etc/ssh/other_key", "600");
    copy(
        &dir.join("client_key.pub"),
        "/root/.ssh/authorized_keys",
        "600",
    );
    host(
        &[
            "docker",
            "exec",
            &name,
            "bash",
            "-c",
            START_SSHD,
            "start-sshd",
            "/etc/ssh/fleet_host_key",
        ],
        None,
    );
    host(
        &[
            "docker",
            "exec",
            &name,
            "sh",
            "-c",
            "echo original > /etc/fleet-file",
        ],
        None,
    );
    name
}

/// Names of the VM's processes from /proc (no `ps` needed).
fn vm_processes(vm: &str) -> String {
    host(
        &[
            "docker",
            "exec",
            vm,
            "bash",
            "-c",
            "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline 2>/dev/null; echo; done",
        ],
        None,
    )
}

#[tokio::test]
async fn ssh_target_runs_scripts_checks_host_keys_and_reverts() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    docker_with(&sandbox_image()).await;
    let network = format!("fleet-net-{}", agent.id);
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            internal: Some(true),
            labels: Some(HashMap::from([(LABEL_AGENT.to_string(), agent.id.clone())])),
            ..Default::default()
        })
        .await
        .unwrap();
    let _network_guard = NetworkGuard(network.clone(), agent.id.clone());

    let dir = tempfile::tempdir().unwrap();
    let host_pub = keygen(&dir.path().join("host_key"));
    keygen(&dir.path().join("other_key"));
    keygen(&dir.path().join("client_key"));
    let wrong_pub = keygen(&dir.path().join("wrong_key"));
    let vm = start_vm(&docker, &agent, &network, dir.path()).await;
    std::fs::write(dir.path().join("known_hosts"), format!("{vm} {host_pub}")).unwrap();
    std::fs::write(
        dir.path().join("wrong_known_hosts"),
        format!("{vm} {wrong_pub}"),
    )
    .unwrap();

    let restore = format!(
        "echo original > /etc/fleet-file && bash -c '{}' start-sshd /etc/ssh/fleet_host_key",
        START_SSHD.replace('\'', r"'\''")
    );
    let config = |slot: u32, known_hosts: &str| {
        let mut config = SshTargetConfig::new(
            vm.clone(),
            dir.path().join("client_key"),
            dir.path().join(known_hosts),
            vec![
                "docker".into(),
                "exec".into(),
                vm.clone(),
                "sh".into(),
                "-c".into(),
                restore.clone(),
            ],
            network.clone(),
            agent.id.clone(),
            slot,
        );
        config.sandbox_image = sandbox_image();
        config.connect_timeout_secs = 5;
        config.ready_timeout_secs = 60;
        config
    };

    let target = SshTarget::create(&docker, config(0, "known_hosts"))
        .await
        .unwrap();
    assert!(matches!(
        target.exec("true", T).await,
        Err(TargetError::NoBaseline)
    ));
    target.baseline().await.expect("ssh answers");
    assert!(target.health().await);

    // The sandbox: limits, labels, key mode, no way out but the VM.
    let inspect = docker
        .inspect_container(target.sandbox_name(), None)
        .await
        .unwrap();
    let hc = inspect.host_config.unwrap();
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.memory, Some(128 * 1024 * 1024));
    assert_eq!(hc.pids_limit, Some(64));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels.get(LABEL_ROLE).map(String::as_str), Some("sandbox"));
    let sandbox = target.sandbox_name().to_string();
    assert_eq!(
        host(
            &[
                "docker",
                "exec",
                &sandbox,
                "stat",
                "-c",
                "%a",
                "/etc/fleet-ssh-key"
            ],
            None
        )
        .trim(),
        "600"
    );
    let out = Command::new("docker")
        .args([
            "exec",
            &sandbox,
            "timeout",
            "3",
            "getent",
            "hosts",
            "deb.debian.org",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "sandbox resolved an outside name");
    let out = Command::new("docker")
        .args([
            "exec",
            &sandbox,
            "timeout",
            "3",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/1.1.1.1/80",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "sandbox reached the outside");

    // A script runs on the VM, stderr interleaved, exit code kept.
    let outcome = target
        .exec(
            "cat /etc/fleet-file; echo changed > /etc/fleet-file; echo oops >&2; exit 4",
            T,
        )
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, Some(4), "{outcome:?}");
    assert_eq!(outcome.output, "original\noops\n");
    assert!(!outcome.timed_out && !outcome.truncated);
    assert_eq!(
        target.read_file("/etc/fleet-file", 100).await.unwrap(),
        b"changed\n"
    );
    assert!(matches!(
        target.read_file("/etc/fleet-file", 3).await,
        Err(TargetError::FileTooLarge { .. })
    ));
    assert!(matches!(
        target.read_file("/etc/missing", 100).await,
        Err(TargetError::NotAFile { .. })
    ));

    // Output is capped; stdin is empty.
    let flood = target
        .exec("yes | head -c 5M; read -r x; echo read=$?", T)
        .await
        .unwrap();
    assert!(flood.truncated && flood.output.len() <= target.config().output_cap_bytes);

    // A runaway script: killed at its timeout, in the sandbox and on the VM.
    let runaway = target
        .exec(
            "echo started; (while :; do sleep 1; done) & sleep 600",
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    assert!(runaway.timed_out, "{runaway:?}");
    assert_eq!(runaway.exit_code, None);
    assert!(runaway.output.contains("started"));
    let processes = vm_processes(&vm);
    assert!(
        !processes.contains("sleep 600"),
        "left on the VM: {processes}"
    );

    // The host key turns wrong: exec is refused, not run.
    host(
        &[
            "docker",
            "exec",
            &vm,
            "bash",
            "-c",
            START_SSHD,
            "start-sshd",
            "/etc/ssh/other_key",
        ],
        None,
    );
    match target
        .exec("echo should-not-run > /etc/fleet-file", T)
        .await
    {
        Err(TargetError::SshUnreachable(message)) => {
            assert!(
                message.contains("Host key verification failed"),
                "{message}"
            )
        }
        other => panic!("exec with a wrong host key: {other:?}"),
    }
    assert!(!target.health().await);

    // Revert: the operator's command on the host, then ssh answers again.
    target.revert().await.expect("revert");
    let back = target.exec("cat /etc/fleet-file", T).await.unwrap();
    assert_eq!(back.output, "original\n");

    // A target whose known_hosts has another key never gets a baseline.
    let wrong = SshTarget::create(&docker, config(1, "wrong_known_hosts"))
        .await
        .unwrap();
    assert!(matches!(
        wrong.baseline().await,
        Err(TargetError::SshUnreachable(_))
    ));
    assert!(!wrong.health().await);

    wrong.remove().await.unwrap();
    target.remove().await.unwrap();
}

/// Removes the test network after the containers on it (the `Agent` guard
/// is dropped later, so it removes them first here).
struct NetworkGuard(String, String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let script = format!(
            "docker ps -aq --filter label=fleet.agent={} | xargs -r docker rm -f -v; docker network rm {}",
            self.1, self.0
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
