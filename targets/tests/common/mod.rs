//! Shared by the Docker tests: real Docker, image names from the
//! environment, one agent id per test, cleanup by label when a test ends.

#![allow(dead_code)]

use std::process::Command;

use fleet_targets::{connect_docker, Docker, DockerTarget, DockerTargetConfig};

pub fn target_image() -> String {
    std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".to_string())
}

pub fn sandbox_image() -> String {
    std::env::var("FLEET_SANDBOX_IMAGE").unwrap_or_else(|_| "fleet-sandbox:bullseye".to_string())
}

/// The Docker engine, with `image` present; panics with what to do if not.
/// Also sends the crate's logs to the test output (`RUST_LOG`).
pub async fn docker_with(image: &str) -> Docker {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let docker = connect_docker().expect("docker client");
    if let Err(error) = docker.ping().await {
        panic!("Docker engine unreachable ({error}); start it and run `make target-image`");
    }
    if let Err(error) = docker.inspect_image(image).await {
        panic!("image {image} missing ({error}); run `make target-image` (or set FLEET_TARGET_IMAGE / FLEET_SANDBOX_IMAGE)");
    }
    docker
}

/// A unique agent id whose containers and images are removed on drop,
/// whether the test passed or not.
pub struct Agent {
    pub id: String,
}

impl Agent {
    pub fn new() -> Self {
        Agent {
            id: format!("t{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn config(&self, slot: u32) -> DockerTargetConfig {
        let mut config = DockerTargetConfig::new(self.id.clone(), slot);
        config.image = target_image();
        config
    }

    /// A started target with its baseline taken.
    pub async fn target(&self, docker: &Docker, slot: u32) -> DockerTarget {
        let target = DockerTarget::create(docker, self.config(slot))
            .await
            .expect("target created");
        target.baseline().await.expect("baseline taken");
        target
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let id = &self.id;
        let script = format!(
            "docker ps -aq --filter label=fleet.agent={id} | xargs -r docker rm -f -v; \
             docker images -q --filter label=fleet.agent={id} | sort -u | xargs -r docker rmi -f; \
             docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' --filter 'reference=fleet-baseline:{id}-*' | xargs -r docker rmi"
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Processes in the target besides init, `sleep infinity` and the lister
/// itself: `pid state cmdline` lines, from /proc so `ps` need not exist.
pub async fn stray_processes(target: &DockerTarget) -> Vec<String> {
    let script = r#"
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = 1 ] && continue
  [ "$p" = "$$" ] && continue
  read -r stat < "$d/stat" 2>/dev/null || continue
  rest=${stat##*) }; state=${rest%% *}
  cmd=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)
  [ "$cmd" = "sleep infinity " ] && continue
  case "$cmd" in *fleet-lister*) continue ;; esac
  echo "$p $state $cmd"
done
"#;
    let script = format!(": fleet-lister\n{script}");
    let outcome = target
        .exec(&script, std::time::Duration::from_secs(30))
        .await
        .expect("process listing");
    assert_eq!(outcome.exit_code, Some(0), "{}", outcome.output);
    outcome
        .output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}
