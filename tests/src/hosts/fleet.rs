//! A fleet across "hosts": the coordinator, its Redis and Postgres on this
//! machine, every agent in a container of its own on a private Docker
//! network, reaching the coordinator and Redis over that network as in
//! production (agents never talk to Postgres).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_common::keys::Keyspace;
use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use sqlx::PgPool;
use tokio::process::Command;

use super::docker::{self, docker, must, PrivateNetwork};
use super::image::agent_image;
use super::postgres::PrivatePostgres;
use crate::api::Api;
use crate::private_redis::PrivateRedis;
use crate::procs::{bin, free_port, repo_root, Proc};
use crate::services::unique;

/// Inside an agent container.
const WORK_DIR: &str = "/var/lib/fleet-agent";

#[derive(Debug, Clone)]
pub struct HostsOpts {
    /// Agents on the simulation.
    pub agents: usize,
    pub sim_work_ms: u64,
}

/// One agent "host": a container and what it was started with.
pub struct AgentHost {
    pub id: String,
    pub container: String,
    /// Host directory mounted as the agent's work dir (its knowledge repo
    /// cache and worktrees), so the checker can look at it afterwards.
    pub work_dir: PathBuf,
    pub docker_targets: bool,
}

pub struct HostFleet {
    pub name: String,
    pub net: PrivateNetwork,
    pub redis: PrivateRedis,
    pub pg: PrivatePostgres,
    pub pool: PgPool,
    pub schema: String,
    pub keys: Keyspace,
    pub leases: LeaseClient,
    pub api: Api,
    listen: String,
    git_secret: String,
    pub logs: PathBuf,
    pub coordinator: Option<Proc>,
    pub image: String,
    pub agents: Vec<AgentHost>,
}

impl HostFleet {
    pub async fn start(opts: HostsOpts) -> Self {
        let name = unique("fh").replace('_', "-")[..15].to_owned();
        let image = agent_image(&bin("fleet-agent"));
        let net = PrivateNetwork::create(&name);
        let redis = PrivateRedis::start(&[net.gateway]).await;
        let pg = PrivatePostgres::start().await;
        let schema = unique("h");
        let pool = fleet_coordinator::db::connect(&pg.url(), Some(&schema))
            .await
            .expect("private postgres");
        fleet_coordinator::db::migrate(&pool)
            .await
            .expect("migrations apply");
        let keys = Keyspace::new(format!("{schema}:"));
        let leases = LeaseClient::connect(&redis.url(), keys.clone(), LeaseSettings::default())
            .await
            .expect("private redis");
        let listen = format!("{}:{}", net.gateway, free_port());
        let logs = repo_root().join("target/test-logs").join(&name);
        std::fs::create_dir_all(logs.join("agents")).unwrap();
        let mut fleet = Self {
            api: Api::new(
                &format!("http://{listen}"),
                &format!("api-{}", uuid::Uuid::new_v4().simple()),
            ),
            git_secret: format!("git-{}", uuid::Uuid::new_v4().simple()),
            listen,
            name,
            net,
            redis,
            pg,
            pool,
            schema,
            keys,
            leases,
            logs,
            coordinator: None,
            image,
            agents: Vec::new(),
        };
        fleet.start_coordinator().await;
        for i in 0..opts.agents {
            fleet.add_agent(&format!("agent-{}", i + 1), opts.sim_work_ms, None);
        }
        fleet
    }

    pub fn gateway(&self) -> IpAddr {
        self.net.gateway
    }

    pub fn knowledge_dir(&self) -> PathBuf {
        self.logs.join("knowledge.git")
    }

    pub async fn start_coordinator(&mut self) {
        let mut cmd = Command::new(bin("fleet-coordinator"));
        cmd.arg("serve")
            .env("FLEET_LISTEN", &self.listen)
            .env("FLEET_ADVERTISE_URL", &self.api.base)
            .env("FLEET_DATABASE_URL", self.pg.url())
            .env("FLEET_PG_SCHEMA", &self.schema)
            .env("FLEET_REDIS_URL", self.redis.url())
            .env(
                "FLEET_ADVERTISE_REDIS_URL",
                self.redis.url_on(self.gateway()),
            )
            .env("FLEET_KEY_PREFIX", self.keys.prefix())
            .env("FLEET_API_TOKEN", &self.api.token)
            .env("FLEET_AGENT_TOKEN", "")
            .env("FLEET_SKILL_PACKS", repo_root().join("skill-packs"))
            .env("FLEET_GIT_SECRET", &self.git_secret)
            .env("FLEET_KNOWLEDGE_DIR", self.knowledge_dir())
            .env("FLEET_LOG_FORMAT", "text")
            // The checker accounts for the runs the harness submits.
            .env("FLEET_AUTO_BUNDLE_CHECK", "false")
            .args(["--lease-loss-budget", "8"]);
        self.coordinator = Some(Proc::spawn(
            "coordinator",
            cmd,
            &self.logs.join("coordinator.log"),
        ));
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            let healthy = http
                .get(format!("{}/healthz", self.api.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return;
            }
            if let Some(status) = self.coordinator.as_mut().and_then(Proc::try_exited) {
                panic!(
                    "coordinator exited with {status}; see {}",
                    self.logs.display()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "coordinator not healthy; see {}",
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL (no goodbye, unacknowledged stream entries left pending),
    /// then a new coordinator process on the same address and state.
    pub async fn restart_coordinator(&mut self, down: Duration) {
        if let Some(c) = self.coordinator.take() {
            c.kill().await;
        }
        tokio::time::sleep(down).await;
        self.start_coordinator().await;
    }

    /// `fleet-coordinator args…` against this fleet's API.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(bin("fleet-coordinator"))
            .args(args)
            .env("FLEET_API_URL", &self.api.base)
            .env("FLEET_API_TOKEN", &self.api.token)
            .output()
            .expect("run fleet-coordinator");
        assert!(
            out.status.success(),
            "fleet-coordinator {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Issues the agent its own token and starts its container.
    fn add_agent(&mut self, id: &str, sim_work_ms: u64, target_image: Option<&str>) {
        let token = self.cli(&["agents", "issue", id, "--by", "chaos-hosts"]);
        let container = if id.starts_with(&self.name) {
            id.to_owned()
        } else {
            format!("{}-{id}", self.name)
        };
        let work_dir = self.logs.join("agents").join(id);
        std::fs::create_dir_all(&work_dir).unwrap();
        let log = format!("/logs/{id}.log");
        let mount_work = format!("{}:{WORK_DIR}", work_dir.display());
        let mount_logs = format!("{}:/logs", self.logs.display());
        let envs = [
            format!("FLEET_COORDINATOR_URL={}", self.api.base),
            format!("FLEET_AGENT_TOKEN={token}"),
            format!("FLEET_AGENT_ID={id}"),
            format!("FLEET_WORK_DIR={WORK_DIR}"),
            format!("FLEET_SIM_WORK_MS={sim_work_ms}"),
            "FLEET_LOG_FORMAT=text".to_owned(),
            "RUST_LOG=info".to_owned(),
        ];
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            container.clone(),
            "--hostname".into(),
            id.chars().take(60).collect(),
            "--network".into(),
            self.net.name.clone(),
            "--label".into(),
            format!("fleet.chaos={}", self.name),
            "-v".into(),
            mount_work,
            "-v".into(),
            mount_logs,
            "--entrypoint".into(),
            "/bin/sh".into(),
        ];
        for e in &envs {
            args.push("-e".into());
            args.push(e.clone());
        }
        if let Some(image) = target_image {
            args.extend([
                "-v".into(),
                "/var/run/docker.sock:/var/run/docker.sock".into(),
                "-e".into(),
                "FLEET_TARGET=docker".into(),
                "-e".into(),
                "FLEET_BRAIN=ssg".into(),
                "-e".into(),
                format!("FLEET_TARGET_IMAGE={image}"),
            ]);
        }
        // `exec`: the agent is the container's first process, so a signal
        // to the container is a signal to the agent.
        args.extend([
            self.image.clone(),
            "-c".into(),
            format!("exec {}/bin/start >>{log} 2>&1", super::image::AGENT_ROOT),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        must(&args);
        self.agents.push(AgentHost {
            id: id.to_owned(),
            container,
            work_dir,
            docker_targets: target_image.is_some(),
        });
    }

    /// Adds an agent on Docker targets of `image` (`ssg` brain), with the
    /// host's Docker socket mounted so that it creates its targets beside
    /// it; its id carries the fleet's name, as do its targets' names.
    /// Answers its index.
    pub fn add_docker_agent(&mut self, image: &str) -> usize {
        let id = format!("{}-docker-1", self.name);
        self.add_agent(&id, 0, Some(image));
        self.agents.len() - 1
    }

    /// Starts a stopped (killed) agent container again: a new incarnation
    /// on the same host and work dir.
    pub fn restart_agent(&self, i: usize) {
        must(&["start", &self.agents[i].container]);
    }

    pub fn agent_running(&self, i: usize) -> bool {
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}}",
            &self.agents[i].container,
        ])
        .is_ok_and(|s| s == "true")
    }

    /// SIGTERM to every agent (they hand back and flush), then waits for
    /// them to exit.
    pub fn stop_agents(&self) {
        let names: Vec<&str> = self.agents.iter().map(|a| a.container.as_str()).collect();
        if names.is_empty() {
            return;
        }
        let mut args = vec!["stop", "-t", "30"];
        args.extend(names);
        let _ = docker(&args);
    }

    /// Waits until the ingester has acknowledged every stream entry.
    pub async fn wait_ingested(&self, timeout: Duration) {
        let started = Instant::now();
        let mut conn = self.leases.connection();
        loop {
            let groups: Result<redis::streams::StreamInfoGroupsReply, _> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(self.keys.events())
                .query_async(&mut conn)
                .await;
            if let Ok(groups) = groups {
                let pending: usize = groups.groups.iter().map(|g| g.pending).sum();
                let lag = groups.groups.first().and_then(|g| g.lag);
                if pending == 0 && lag == Some(0) {
                    return;
                }
            }
            assert!(started.elapsed() < timeout, "stream not drained");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Containers left by this fleet: agents' targets (each agent removes
    /// its own at shutdown) and stray ones.
    pub fn leftover_targets(&self) -> Vec<String> {
        self.agents
            .iter()
            .filter(|a| a.docker_targets)
            .flat_map(|a| docker::targets_of(&a.id))
            .collect()
    }

    /// Worktrees still registered in each agent's knowledge-repo cache
    /// (beyond the cache's own directory).
    pub fn leftover_worktrees(&self) -> Vec<String> {
        let mut left = Vec::new();
        for a in &self.agents {
            let repo = a.work_dir.join("repo");
            if !repo.exists() {
                continue;
            }
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["worktree", "list", "--porcelain"])
                .output()
                .expect("git worktree list");
            let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("worktree "))
                .map(str::to_owned)
                .collect();
            left.extend(listed.into_iter().skip(1).map(|w| format!("{}: {w}", a.id)));
        }
        left
    }

    pub async fn shutdown(mut self) {
        self.stop_agents();
        let names: Vec<String> = self.agents.iter().map(|a| a.container.clone()).collect();
        docker::remove_force(&names);
        let targets = self.leftover_targets();
        docker::remove_force(&targets);
        if let Some(c) = self.coordinator.take() {
            c.terminate(Duration::from_secs(10)).await;
        }
    }
}

impl Drop for HostFleet {
    fn drop(&mut self) {
        // A failed run must not leave its containers behind.
        // Targets are named after their agent, whose id carries the
        // fleet's name. No panic here: this may run while unwinding.
        let mut names = docker::containers_named(&self.name);
        names.extend(docker::containers_named(&format!(
            "fleet-target-{}",
            self.name
        )));
        docker::remove_force(&names);
    }
}

/// The target image of the Docker-target agent.
pub fn docker_target_image() -> String {
    std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into())
}
