//! One container the fleet runs scripts in: created with its limits and no
//! more network than it needs (DESIGN T1), started, removed.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, RemoveContainerOptions, RenameContainerOptions,
};
use bollard::Docker;
use tracing::Instrument;

use crate::error::TargetError;

/// The only capabilities a container gets: every other one (Docker's
/// default set included) is dropped, so a new default in a later Docker
/// adds nothing. A hardening rule on Debian 11 edits files, changes modes
/// and owners, writes sysctl and service files, and installs packages
/// from the image's offline repo; each of these was checked by installing
/// every package of `deploy/target-image/repo-packages.txt` with exactly
/// this set (`targets/tests/sandbox.rs` keeps the common paths honest):
///
/// - `CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `FSETID`: root editing files it
///   does not own, `chown`/`chmod`, dpkg unpacking setuid/setgid files
///   with their bits kept.
/// - `SETUID`, `SETGID`: apt's download sandbox (`_apt`), `su`/`runuser`,
///   `useradd`/`passwd` in rules and in maintainer scripts.
/// - `SETFCAP`: maintainer scripts that `setcap` a binary (iputils-ping).
/// - `KILL`: the timeout's kill script (`exec.rs`) must kill a script's
///   processes whatever user they switched to.
/// - `AUDIT_WRITE`: `su`, `sudo` and the shadow tools send audit records
///   and some refuse to work when they cannot.
///
/// Dropped from Docker's default set: `NET_RAW` and `NET_BIND_SERVICE`
/// (there is no network; package installs start no services,
/// `policy-rc.d` says 101), `MKNOD` (no device nodes), `SYS_CHROOT`
/// (`sshd -t` needs none; nothing on the target runs a privilege-separated
/// daemon), `SETPCAP` (nothing may widen or re-grant capabilities).
pub const KEPT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "SETUID",
    "SETGID",
    "SETFCAP",
    "KILL",
    "AUDIT_WRITE",
];

/// The bounding-set mask (`CapBnd` in `/proc/<pid>/status`) of
/// [`KEPT_CAPABILITIES`], to check from inside a container.
pub fn kept_capability_mask() -> u64 {
    // Linux capability numbers (linux/capability.h).
    const NUMBERS: &[(&str, u32)] = &[
        ("CHOWN", 0),
        ("DAC_OVERRIDE", 1),
        ("FOWNER", 3),
        ("FSETID", 4),
        ("KILL", 5),
        ("SETGID", 6),
        ("SETUID", 7),
        ("AUDIT_WRITE", 29),
        ("SETFCAP", 31),
    ];
    KEPT_CAPABILITIES
        .iter()
        .map(|name| {
            let (_, bit) = NUMBERS
                .iter()
                .find(|(known, _)| known == name)
                .expect("every kept capability has its number here");
            1u64 << bit
        })
        .fold(0, |mask, bit| mask | bit)
}

/// What to create. `network: None` means `network_mode: none`.
#[derive(Debug, Clone)]
pub(crate) struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub network: Option<String>,
    pub cpus: f64,
    pub memory_bytes: i64,
    pub pids_limit: i64,
}

/// A container addressed by its name, which stays the same across a
/// revert's recreation.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub(crate) docker: Docker,
    pub(crate) name: String,
}

impl Container {
    /// Creates and starts the container, replacing one of the same name.
    pub(crate) async fn start(docker: &Docker, spec: &ContainerSpec) -> Result<Self, TargetError> {
        let container = Container {
            docker: docker.clone(),
            name: spec.name.clone(),
        };
        container.remove().await?;
        let network_mode = spec.network.clone().unwrap_or_else(|| "none".to_string());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            // Imported images have no CMD; this one only has to stay up.
            // SSG's content treats `/.dockerenv` (which Docker creates in
            // every container) as "not a machine" and marks ~70 rules
            // notapplicable, so it goes first.
            entrypoint: Some(vec!["/bin/sh".to_string(), "-c".to_string()]),
            cmd: Some(vec!["rm -f /.dockerenv; exec sleep infinity".to_string()]),
            labels: Some(spec.labels.clone()),
            networking_config: spec.network.as_ref().map(|network| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            host_config: Some(HostConfig {
                network_mode: Some(network_mode),
                nano_cpus: Some((spec.cpus * 1e9) as i64),
                memory: Some(spec.memory_bytes),
                memory_swap: Some(spec.memory_bytes),
                pids_limit: Some(spec.pids_limit),
                // docker-init reaps what killed scripts leave behind.
                init: Some(true),
                cap_drop: Some(vec!["ALL".to_owned()]),
                cap_add: Some(KEPT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
                // setuid binaries gain nothing: scripts run as root anyway,
                // and a process that dropped privileges cannot regain them.
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        docker.create_container(Some(options), body).await?;
        docker.start_container(&spec.name, None).await?;
        tracing::debug!(container = %spec.name, image = %spec.image, "container started");
        Ok(container)
    }

    /// Force-removes the container; gone already is fine.
    pub(crate) async fn remove(&self) -> Result<(), TargetError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .docker
            .remove_container(&self.name, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            // Another removal (a revert's background one) is under way.
            Err(error) if is_conflict(&error) => {
                tracing::debug!(container = %self.name, %error, "removal already in progress");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Moves the container out of its name's way and removes it in the
    /// background, so a revert does not wait for the removal. Its labels
    /// stay, so `cleanup_orphans` finds it if the agent dies first.
    pub(crate) async fn discard(&self, suffix: &str) -> Result<(), TargetError> {
        let discarded = Container {
            docker: self.docker.clone(),
            name: format!("{}-discarded-{suffix}", self.name),
        };
        let options = RenameContainerOptions {
            name: discarded.name.clone(),
        };
        match self.docker.rename_container(&self.name, options).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => {
                tracing::debug!(container = %self.name, %error, "rename failed; removing in place");
                return self.remove().await;
            }
        }
        let span = tracing::debug_span!("discard", container = %discarded.name);
        tokio::spawn(
            async move {
                if let Err(error) = discarded.remove().await {
                    tracing::warn!(%error, "discarded container not removed");
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Kills every process in the container at once: the last resort when
    /// a timed-out script cannot be killed from inside (pid limit reached).
    pub(crate) async fn kill(&self) -> Result<(), TargetError> {
        let options = KillContainerOptions {
            signal: "KILL".to_string(),
        };
        match self.docker.kill_container(&self.name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if is_not_found(&error) || is_conflict(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The host pid of the container's main process (docker-init).
    pub(crate) async fn pid(&self) -> Result<u32, TargetError> {
        let inspect = self.docker.inspect_container(&self.name, None).await?;
        inspect
            .state
            .and_then(|state| state.pid)
            .filter(|pid| *pid > 0)
            .and_then(|pid| u32::try_from(pid).ok())
            .ok_or_else(|| TargetError::NotRunning(self.name.clone()))
    }

    pub(crate) async fn is_running(&self) -> Result<bool, TargetError> {
        match self.docker.inspect_container(&self.name, None).await {
            Ok(inspect) => Ok(inspect
                .state
                .and_then(|state| state.running)
                .unwrap_or(false)),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_conflict(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kept_mask_is_what_docker_shows_for_them() {
        // `CapBnd` of a container with exactly these (checked by hand with
        // `docker run --cap-drop ALL --cap-add ...`).
        assert_eq!(super::kept_capability_mask(), 0xa000_00fb);
    }
}
