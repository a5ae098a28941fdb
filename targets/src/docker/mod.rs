//! The container target: scripts run inside a container with no network
//! and CPU, memory and pid limits (DESIGN T1), reverted to a baseline image
//! (T3).

mod archive;
mod baseline;
mod config;
mod container;
mod exec;
mod limits;
mod orphans;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;

pub use config::{DockerTargetConfig, BASELINE_REPO, LABEL_AGENT, LABEL_ROLE, LABEL_SLOT};
pub use orphans::cleanup_orphans;

pub(crate) use config::{labels, validate_agent_id};
pub use container::{kept_capability_mask, KEPT_CAPABILITIES};
pub(crate) use container::{Container, ContainerSpec};
pub(crate) use exec::{new_marker, KILL_SCRIPT, MAX_SCRIPT_BYTES};

use crate::error::TargetError;
use crate::output::ExecOutcome;

/// How long `health` waits for a trivial exec.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `script` with bash in a new session, stderr merged into stdout.
const SCRIPT_WRAPPER: &str = r#"exec 2>&1; exec setsid -w bash -c "$1" bash"#;

/// A container owned by one agent slot.
#[derive(Debug)]
pub struct DockerTarget {
    config: DockerTargetConfig,
    container: Container,
    /// The baseline image reference, once taken.
    baseline: Mutex<Option<String>>,
    /// Whether anything may have changed since the container was created
    /// from its image.
    touched: AtomicBool,
    /// The container's cgroup counters as last read (zero for a new
    /// container), to tell what the next script did.
    counters: Mutex<limits::Counters>,
}

impl DockerTarget {
    /// Creates and starts the target's container, replacing a leftover of
    /// the same name. It has no baseline yet.
    pub async fn create(docker: &Docker, config: DockerTargetConfig) -> Result<Self, TargetError> {
        validate_agent_id(&config.agent_id)?;
        let container = Container::start(docker, &spec(&config, &config.image)).await?;
        tracing::info!(
            agent = %config.agent_id,
            slot = config.slot,
            container = %container.name,
            image = %config.image,
            "target created"
        );
        Ok(DockerTarget {
            config,
            container,
            baseline: Mutex::new(None),
            touched: AtomicBool::new(false),
            counters: Mutex::new(limits::Counters::default()),
        })
    }

    pub fn config(&self) -> &DockerTargetConfig {
        &self.config
    }

    pub fn container_name(&self) -> &str {
        &self.container.name
    }

    /// The baseline image, once `baseline` succeeded.
    pub fn baseline_image(&self) -> Option<String> {
        self.lock_baseline().clone()
    }

    /// Snapshots the current state as the baseline that `revert` returns to
    /// (DESIGN T3).
    pub async fn baseline(&self) -> Result<(), TargetError> {
        if !self.touched.load(Ordering::SeqCst) && self.lock_baseline().is_some() {
            // Reverted and untouched since: the state is the baseline.
            return Ok(());
        }
        let docker = &self.container.docker;
        let reference = self.config.baseline_image();
        let tag = self.config.baseline_tag();
        let started = tokio::time::Instant::now();
        let old = baseline::image_id(docker, &reference).await?;
        // Untouched since created from its image: the image is the state.
        if self.touched.load(Ordering::SeqCst) {
            baseline::commit_baseline(
                docker,
                &self.container.name,
                &tag,
                &self.config.agent_id,
                self.config.slot,
            )
            .await?;
        } else {
            let source = self.current_image().await?;
            baseline::tag_baseline(docker, &source, &tag).await?;
        }
        let new = baseline::image_id(docker, &reference).await?;
        if let Some(old) = old.filter(|old| Some(old) != new.as_ref()) {
            // Only if nothing else (a container, another tag) uses it.
            if let Err(error) = baseline::remove_baseline(docker, &old).await {
                tracing::debug!(image = %old, %error, "previous baseline kept");
            }
        }
        *self.lock_baseline() = Some(reference.clone());
        tracing::info!(
            container = %self.container.name,
            image = %reference,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "baseline taken"
        );
        Ok(())
    }

    /// Returns the target to its baseline: a new container from the
    /// baseline image under the same name; the old one is removed in the
    /// background.
    pub async fn revert(&self) -> Result<(), TargetError> {
        let reference = self
            .lock_baseline()
            .clone()
            .ok_or(TargetError::NoBaseline)?;
        let started = tokio::time::Instant::now();
        self.container.discard(&new_marker()).await?;
        Container::start(&self.container.docker, &spec(&self.config, &reference)).await?;
        self.touched.store(false, Ordering::SeqCst);
        // A new container, a new cgroup: its counters start at zero.
        *self.lock_counters() = limits::Counters::default();
        tracing::info!(
            container = %self.container.name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "target reverted"
        );
        Ok(())
    }

    /// Runs `script` with bash, stdin empty, for at most `timeout` (clamped
    /// to the configured maximum). On timeout its whole process tree is
    /// killed and `exit_code` is `None`. Refused before `baseline` (T3).
    /// `contained` says what the sandbox did to it (OOM kill, pid limit,
    /// timeout, output cap), read from the container's cgroup afterwards.
    pub async fn exec(&self, script: &str, timeout: Duration) -> Result<ExecOutcome, TargetError> {
        if self.lock_baseline().is_none() {
            return Err(TargetError::NoBaseline);
        }
        if script.len() > MAX_SCRIPT_BYTES {
            return Err(TargetError::ScriptTooLarge {
                len: script.len(),
                max: MAX_SCRIPT_BYTES,
            });
        }
        self.touched.store(true, Ordering::SeqCst);
        let argv = vec![
            "bash".to_string(),
            "-c".to_string(),
            SCRIPT_WRAPPER.to_string(),
            "fleet-script".to_string(),
            script.to_string(),
        ];
        let timeout = timeout.min(self.config.max_exec_timeout());
        let raw = self
            .container
            .run(argv, timeout, self.config.output_cap_bytes, true)
            .await?;
        let (output, truncated) = raw.output.into_text();
        let limits = limits::Limits {
            memory_bytes: self.config.memory_bytes,
            pids_limit: self.config.pids_limit,
            timeout,
            output_cap: self.config.output_cap_bytes,
        };
        let mut met = self.met(raw.timed_out, truncated).await;
        if !raw.timed_out && !met.container_killed && (met.after.is_none() || met.hit_pid_limit()) {
            // The script exited but left processes at the pid limit (a
            // fork bomb in the background): they would starve the
            // evaluation and the next script. Killed like a timed-out
            // script's; the container goes if that cannot work.
            tracing::info!(container = %self.container.name, "killing what the script left at the pid limit");
            self.container.kill_marked(&raw.marker).await;
            let again = self.met(false, truncated).await;
            met.after = again.after.or(met.after);
            met.container_killed = again.container_killed;
        }
        let contained = limits::reasons(&met, &limits);
        if let Some(reason) = &contained {
            tracing::info!(container = %self.container.name, reason, "script contained by the sandbox");
        }
        Ok(ExecOutcome {
            exit_code: raw.exit_code,
            output,
            timed_out: raw.timed_out,
            truncated,
            contained,
        })
    }

    /// What the script met: the cgroup counters before (as last read) and
    /// now.
    async fn met(&self, timed_out: bool, truncated: bool) -> limits::Met {
        let before = *self.lock_counters();
        let (after, container_killed) = match self.container.counters().await {
            Ok(Some(now)) => {
                *self.lock_counters() = now;
                (Some(now), false)
            }
            Ok(None) => (None, true),
            Err(error) => {
                tracing::warn!(container = %self.container.name, %error, "cgroup counters unreadable");
                (None, false)
            }
        };
        limits::Met {
            before,
            after,
            timed_out,
            truncated,
            container_killed,
        }
    }

    /// Reads the regular file `path`; larger than `max_bytes` is an error.
    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, TargetError> {
        self.container.read_file(path, max_bytes).await
    }

    /// Writes `bytes` to `path` (mode 0644, owner root); the parent
    /// directory must exist.
    pub async fn write_file(&self, path: &str, bytes: &[u8]) -> Result<(), TargetError> {
        self.touched.store(true, Ordering::SeqCst);
        self.container.write_file(path, bytes, 0o644).await
    }

    /// Whether the container runs and answers a trivial exec in time.
    pub async fn health(&self) -> bool {
        match self.container.is_running().await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(error) => {
                tracing::warn!(container = %self.container.name, %error, "health inspect failed");
                return false;
            }
        }
        let argv = vec!["true".to_string()];
        match self.container.run(argv, HEALTH_TIMEOUT, 1024, true).await {
            Ok(raw) => raw.exit_code == Some(0),
            Err(error) => {
                tracing::warn!(container = %self.container.name, %error, "health exec failed");
                false
            }
        }
    }

    /// Removes the container, those that reverts discarded, and the
    /// baseline image (shutdown).
    pub async fn remove(&self) -> Result<(), TargetError> {
        self.container.remove().await?;
        let docker = &self.container.docker;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_AGENT}={}", self.config.agent_id),
                format!("{LABEL_SLOT}={}", self.config.slot),
                format!("{LABEL_ROLE}=target"),
            ],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        for summary in docker.list_containers(Some(options)).await? {
            if let Some(id) = summary.id {
                let discarded = Container {
                    docker: docker.clone(),
                    name: id,
                };
                discarded.remove().await?;
            }
        }
        let taken = self.lock_baseline().take();
        if let Some(reference) = taken {
            baseline::remove_baseline(&self.container.docker, &reference).await?;
        }
        tracing::info!(container = %self.container.name, "target removed");
        Ok(())
    }

    /// The image id the container runs, so a tag names exactly it.
    async fn current_image(&self) -> Result<String, TargetError> {
        let inspect = self
            .container
            .docker
            .inspect_container(&self.container.name, None)
            .await?;
        Ok(inspect.image.unwrap_or_else(|| self.config.image.clone()))
    }

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, limits::Counters> {
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_baseline(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.baseline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn spec(config: &DockerTargetConfig, image: &str) -> ContainerSpec {
    ContainerSpec {
        name: config.container_name(),
        image: image.to_string(),
        labels: labels(&config.agent_id, config.slot, "target"),
        network: None,
        cpus: config.cpus,
        memory_bytes: config.memory_bytes,
        pids_limit: config.pids_limit,
    }
}
