//! The Docker CLI, for what the chaos harness does to containers and
//! networks: the same commands an operator would type.

use std::net::IpAddr;
use std::process::Command;

/// Runs `docker args…`; stdout on success, the command and stderr otherwise.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker ({e}): install Docker Engine"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`docker`] for steps that must work; panics with what failed.
pub fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A user-defined bridge network of its own: the agents' "hosts" get their
/// own addresses on it and reach the coordinator's host at `gateway`.
pub struct PrivateNetwork {
    pub name: String,
    pub gateway: IpAddr,
}

impl PrivateNetwork {
    pub fn create(name: &str) -> Self {
        let _ = docker(&["network", "rm", name]);
        must(&["network", "create", "--driver", "bridge", name]);
        let gateway = must(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            name,
        ]);
        let gateway = gateway
            .parse()
            .unwrap_or_else(|e| panic!("network {name} gateway {gateway:?}: {e}"));
        Self {
            name: name.to_owned(),
            gateway,
        }
    }

    pub fn disconnect(&self, container: &str) {
        must(&["network", "disconnect", "--force", &self.name, container]);
    }

    pub fn connect(&self, container: &str) {
        must(&["network", "connect", &self.name, container]);
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// Containers (any state) whose name starts with `prefix`.
pub fn containers_named(prefix: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name=^{prefix}"),
    ])
    .unwrap_or_default()
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Containers (any state) labelled `fleet.agent=<agent>`: an agent's
/// targets. Panics when Docker does not answer: an empty answer must mean
/// "none left", never "could not look".
pub fn targets_of(agent: &str) -> Vec<String> {
    must(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=fleet.agent={agent}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The host pid of a running container's first process.
pub fn host_pid(container: &str) -> Option<i32> {
    docker(&["inspect", "-f", "{{.State.Pid}}", container])
        .ok()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

pub fn remove_force(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    let _ = docker(&args);
}
