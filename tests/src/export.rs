//! A fresh Docker target for the exports of a bundle (DESIGN H6): the test
//! scans chosen rules with oscap on it, applies the bash export through
//! its sandboxed exec, or lets `ansible-playbook` reach it through
//! community.docker's `docker` connection (the target has no Python and
//! no network; that connection runs `docker exec`).

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use fleet_scap::{Evaluation, RuleStatus};
use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig, ExecOutcome};

/// Where the Debian 11 datastream is on the target (and in the pack).
pub const DATASTREAM: &str = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml";
pub const PROFILE: &str = "xccdf_org.ssgproject.content_profile_standard";
pub const RULE_PREFIX: &str = "xccdf_org.ssgproject.content_rule_";
const ARF: &str = "/var/tmp/fleet-export-arf.xml";

pub fn target_image() -> String {
    std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into())
}

/// A target container of its own (the sandbox's limits, no network),
/// removed even when the test panics.
pub struct ExportTarget {
    pub target: DockerTarget,
    removed: bool,
}

impl Drop for ExportTarget {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", self.target.container_name()])
                .output();
            if let Some(image) = self.target.baseline_image() {
                let _ = std::process::Command::new("docker")
                    .args(["rmi", &image])
                    .output();
            }
        }
    }
}

impl ExportTarget {
    /// Panics (never skips) when Docker or the image is missing.
    pub async fn start(tag: &str) -> Self {
        let docker = connect_docker().expect("docker is reachable: install and start Docker");
        let agent = format!(
            "export-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut config = DockerTargetConfig::new(&agent, 0);
        config.image = target_image();
        let target = DockerTarget::create(&docker, config)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "target from {} ({e}): run `make target-image`",
                    target_image()
                )
            });
        target.baseline().await.expect("baseline");
        Self {
            target,
            removed: false,
        }
    }

    pub fn container(&self) -> &str {
        self.target.container_name()
    }

    /// Runs `script` on the target (bash, stdin empty).
    pub async fn exec(&self, script: &str) -> ExecOutcome {
        self.target
            .exec(script, Duration::from_secs(300))
            .await
            .expect("exec on the target")
    }

    /// Each of `rules` (short ids) as a fresh oscap evaluation on the
    /// target sees it.
    pub async fn scan(&self, rules: &[&str]) -> HashMap<String, RuleStatus> {
        let selected: String = rules
            .iter()
            .map(|r| format!(" --rule {RULE_PREFIX}{r}"))
            .collect();
        // Exit 2 means a rule failed, which is what a scan is for.
        let out = self
            .exec(&format!(
                "oscap xccdf eval --skip-valid --profile {PROFILE}{selected} --results-arf {ARF} \
                 {DATASTREAM} >/var/tmp/fleet-export-oscap.log 2>&1; rc=$?; \
                 [ $rc -eq 0 ] || [ $rc -eq 2 ] || {{ tail -c 2000 /var/tmp/fleet-export-oscap.log; exit $rc; }}"
            ))
            .await;
        assert_eq!(out.exit_code, Some(0), "oscap: {}", out.output);
        let arf = self
            .target
            .read_file(ARF, 64 * 1024 * 1024)
            .await
            .expect("ARF");
        let eval = Evaluation::parse(&String::from_utf8_lossy(&arf)).expect("ARF parses");
        rules
            .iter()
            .map(|r| {
                let status = eval
                    .rule(&format!("{RULE_PREFIX}{r}"))
                    .map_or(RuleStatus::Unknown, |x| x.status);
                (r.to_string(), status)
            })
            .collect()
    }

    pub async fn remove(mut self) {
        self.target.remove().await.expect("remove the target");
        self.removed = true;
    }
}

/// `ansible-playbook args…` against an inventory of the one container
/// `container`, reached by `docker exec`. Becoming root is `su` there:
/// the container runs as root and has no sudo. Panics (never skips) when
/// Ansible is missing.
pub fn ansible_playbook(inventory_dir: &Path, container: &str, args: &[&str]) -> Output {
    let inventory = inventory_dir.join("inventory.ini");
    std::fs::write(
        &inventory,
        format!(
            "[targets]\n{container} ansible_connection=community.docker.docker ansible_become_method=su\n"
        ),
    )
    .expect("write the inventory");
    let config = inventory_dir.join("ansible.cfg");
    std::fs::write(&config, "[defaults]\n").expect("write ansible.cfg");
    std::process::Command::new("ansible-playbook")
        .arg("-i")
        .arg(&inventory)
        .args(args)
        // No user or system configuration changes what the test runs.
        .env("ANSIBLE_CONFIG", &config)
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCAL_TEMP", inventory_dir.join("tmp"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run ansible-playbook ({e}): run `make deps` (Debian's ansible package)")
        })
}
