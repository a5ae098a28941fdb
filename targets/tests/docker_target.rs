//! The container target against the real Docker engine: baseline, revert,
//! limits, no network, files (DESIGN T1, T3).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{docker_with, target_image, Agent};
use fleet_targets::{DockerTarget, TargetError, LABEL_AGENT, LABEL_ROLE, LABEL_SLOT};

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn revert_restores_changed_deleted_and_created_files() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;

    let setup = target
        .exec(
            "echo original > /etc/fleet-keep && echo doomed > /etc/fleet-doomed",
            T,
        )
        .await
        .unwrap();
    assert_eq!(setup.exit_code, Some(0), "{}", setup.output);
    // A baseline taken after changes commits them.
    target.baseline().await.expect("second baseline");

    let change = target
        .exec(
            "echo changed > /etc/fleet-keep; rm /etc/fleet-doomed; echo new > /etc/fleet-new; rm -f /etc/issue",
            T,
        )
        .await
        .unwrap();
    assert_eq!(change.exit_code, Some(0), "{}", change.output);

    target.revert().await.expect("revert");

    let check = target
        .exec(
            "cat /etc/fleet-keep /etc/fleet-doomed; test -e /etc/fleet-new && echo new-present; test -s /etc/issue && echo issue-present",
            T,
        )
        .await
        .unwrap();
    assert_eq!(check.exit_code, Some(0), "{}", check.output);
    assert_eq!(check.output, "original\ndoomed\nissue-present\n");
    assert!(target.health().await);

    target.remove().await.expect("remove");
}

#[tokio::test]
async fn exec_and_revert_before_baseline_are_refused() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = DockerTarget::create(&docker, agent.config(0))
        .await
        .unwrap();
    assert!(matches!(
        target.exec("true", T).await,
        Err(TargetError::NoBaseline)
    ));
    assert!(matches!(
        target.revert().await,
        Err(TargetError::NoBaseline)
    ));
    target.baseline().await.unwrap();
    assert_eq!(target.exec("true", T).await.unwrap().exit_code, Some(0));
    target.remove().await.unwrap();
}

#[tokio::test]
async fn limits_labels_and_no_network_are_applied() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 7).await;
    let inspect = docker
        .inspect_container(target.container_name(), None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.memory, Some(512 * 1024 * 1024));
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.init, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    let added = host.cap_add.unwrap_or_default();
    assert!(added.contains(&"CHOWN".to_owned()), "{added:?}");
    for gone in [
        "NET_RAW",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "SETPCAP",
    ] {
        assert!(!added.contains(&gone.to_owned()), "{gone} kept: {added:?}");
    }
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges:true".to_owned()])
    );
    let labels: HashMap<String, String> = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels.get(LABEL_AGENT), Some(&agent.id));
    assert_eq!(labels.get(LABEL_ROLE).map(String::as_str), Some("target"));
    assert_eq!(labels.get(LABEL_SLOT).map(String::as_str), Some("7"));

    let dns = target.exec("getent hosts deb.debian.org", T).await.unwrap();
    assert_ne!(dns.exit_code, Some(0), "name resolved: {}", dns.output);
    let tcp = target
        .exec("timeout 10 bash -c 'exec 3<>/dev/tcp/1.1.1.1/80'", T)
        .await
        .unwrap();
    assert_ne!(tcp.exit_code, Some(0), "connected: {}", tcp.output);
    let links = target.exec("ls /sys/class/net", T).await.unwrap();
    assert_eq!(links.output.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    // Hardening in effect inside: no device nodes, no privilege gain.
    let node = target.exec("mknod /tmp/fleet-null c 1 3", T).await.unwrap();
    assert_ne!(node.exit_code, Some(0), "mknod worked: {}", node.output);
    let nnp = target
        .exec("grep '^NoNewPrivs:' /proc/self/status", T)
        .await
        .unwrap();
    assert!(nnp.output.contains('1'), "{}", nnp.output);
    // What package scripts need still works.
    let chown = target
        .exec(
            "touch /tmp/f && chown nobody /tmp/f && chmod 0640 /tmp/f",
            T,
        )
        .await
        .unwrap();
    assert_eq!(chown.exit_code, Some(0), "{}", chown.output);

    // The limits survive a revert.
    target.revert().await.unwrap();
    let inspect = docker
        .inspect_container(target.container_name(), None)
        .await
        .unwrap();
    assert_eq!(inspect.host_config.unwrap().pids_limit, Some(256));
    target.remove().await.unwrap();
}

#[tokio::test]
async fn files_go_in_and_out_through_tar() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;

    // An ARF results file is about 6 MB.
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    target.write_file("/tmp/results.xml", &big).await.unwrap();
    let back = target
        .read_file("/tmp/results.xml", 8 * 1024 * 1024)
        .await
        .unwrap();
    assert!(back == big, "6 MB file came back different");
    assert!(matches!(
        target.read_file("/tmp/results.xml", 1024).await,
        Err(TargetError::FileTooLarge { .. })
    ));
    assert!(matches!(
        target.read_file("/tmp/missing", 1024).await,
        Err(TargetError::NotAFile { .. })
    ));
    assert!(matches!(
        target.read_file("/etc", 1024 * 1024).await,
        Err(TargetError::NotAFile { .. })
    ));

    let produced = target
        .exec("printf 'from script' > /tmp/out && chmod 600 /tmp/out", T)
        .await
        .unwrap();
    assert_eq!(produced.exit_code, Some(0));
    assert_eq!(
        target.read_file("/tmp/out", 100).await.unwrap(),
        b"from script"
    );
    target.remove().await.unwrap();
}
