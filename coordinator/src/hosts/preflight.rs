//! Before a rollout touches any host: every host of the inventory must
//! answer over SSH with its pinned host key, through an SSH sandbox
//! container like the agents' (T1, T6). `ssh … true` changes nothing.

use std::time::Duration;

use fleet_common::host::InventoryHost;
use fleet_targets::{connect_docker, SshTarget, SshTargetConfig};

/// One host's problem, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub host: String,
    pub why: String,
}

/// Probes every host (a few at a time); the hosts that did not answer.
pub async fn probe_all(
    hosts: &[InventoryHost],
    sandbox_image: &str,
) -> Result<Vec<Unreachable>, String> {
    let docker = connect_docker()
        .map_err(|e| format!("the preflight needs Docker for its SSH sandbox: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let id = format!("preflight-{}", std::process::id());
    let probes = hosts.iter().enumerate().map(|(slot, host)| {
        let (docker, id, dir) = (docker.clone(), id.clone(), dir.path().to_owned());
        async move {
            probe(&docker, &id, slot as u32, &dir, host, sandbox_image)
                .await
                .err()
                .map(|why| Unreachable {
                    host: host.name.clone(),
                    why,
                })
        }
    });
    use futures_util::StreamExt;
    let found: Vec<Option<Unreachable>> = futures_util::stream::iter(probes)
        .buffered(4)
        .collect()
        .await;
    Ok(found.into_iter().flatten().collect())
}

async fn probe(
    docker: &fleet_targets::Docker,
    id: &str,
    slot: u32,
    dir: &std::path::Path,
    host: &InventoryHost,
    sandbox_image: &str,
) -> Result<(), String> {
    let known_hosts = dir.join(format!("{}.known_hosts", host.name));
    std::fs::write(&known_hosts, host.known_hosts_line()).map_err(|e| e.to_string())?;
    let mut config = SshTargetConfig::new(
        host.address.clone(),
        &host.key,
        known_hosts,
        Vec::new(),
        host.network.clone(),
        id,
        slot,
    );
    config.revert_optional = true;
    config.port = host.port;
    config.user = host.user.clone();
    config.sandbox_image = sandbox_image.to_owned();
    config.connect_timeout_secs = 10;
    let target = SshTarget::create(docker, config)
        .await
        .map_err(|e| e.to_string())?;
    let answered = tokio::time::timeout(Duration::from_secs(60), target.baseline()).await;
    let _ = target.remove().await;
    match answered {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(explain(&e.to_string())),
        Err(_) => Err("no answer within 60 s".into()),
    }
}

/// ssh's own words, with what to do about the common cases.
fn explain(error: &str) -> String {
    if error.contains("Host key verification failed")
        || error.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
    {
        format!("the host's key does not match host_key in the inventory (possible impersonation; fix host_key only after checking the host): {error}")
    } else if error.contains("Permission denied") {
        format!("the key was refused: check key and user: {error}")
    } else {
        format!("unreachable from the SSH sandbox (check address, port and network): {error}")
    }
}
