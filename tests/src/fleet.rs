//! A whole fleet of real processes on its own schema and key prefix: the
//! coordinator binary and N agent binaries, talking through the real Redis
//! and Postgres.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_common::api::{RunStatus, SubmitRunResponse};
use fleet_common::keys::Keyspace;
use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use fleet_common::{Budgets, RunId};
use tokio::process::Command;

use crate::api::Api;
use crate::db::TestDb;
use crate::procs::{bin, free_port, repo_root, Proc};
use crate::services::{database_url, redis_url};

#[derive(Debug, Clone)]
pub struct FleetOpts {
    pub agents: usize,
    /// Simulated work per attempt, in ms.
    pub sim_work_ms: u64,
    pub lease_loss_budget: u32,
    /// Agents on Docker targets of this image with the `ssg` brain, and the
    /// planner scanning it; `None`: the simulation.
    pub target_image: Option<String>,
    /// With `target_image`: the `openai` brain on this endpoint instead of
    /// `ssg`.
    pub llm_url: Option<String>,
    /// The coordinator dreams by itself after each run (else by hand).
    pub auto_dream: bool,
    /// After a dream, the coordinator checks main's bundle on a fresh
    /// target (a compose task an agent takes first); off by default so a
    /// test's own runs are not queued behind it.
    pub auto_bundle_check: bool,
    /// Every process logs JSON lines (`--log-format json`).
    pub json_logs: bool,
    /// The coordinator has no enrollment token: each agent registers with
    /// its own token, issued with `fleet-coordinator agents issue`.
    pub per_agent_tokens: bool,
    /// The Redis the coordinator and the test's `LeaseClient` use (agents
    /// get it from the coordinator); `None`: the shared one.
    pub redis_url: Option<String>,
    /// The coordinator's skill-pack directory; `None`: the repo's.
    pub skill_packs: Option<PathBuf>,
    /// More environment for every agent (after the harness's own, so it
    /// wins), e.g. `FLEET_LLM_RETRIES`.
    pub agent_env: Vec<(String, String)>,
    /// With `target_image`: agents on qemu VMs from this `make vm-image`
    /// output instead of containers.
    pub vm_image: Option<PathBuf>,
}

impl FleetOpts {
    /// One agent with the `openai` brain on `llm_url`, on Docker targets of
    /// `FLEET_TARGET_IMAGE` (default `fleet-target:bullseye`).
    pub fn llm(llm_url: &str) -> Self {
        let image =
            std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into());
        Self {
            agents: 1,
            target_image: Some(image),
            llm_url: Some(llm_url.to_owned()),
            ..Self::default()
        }
    }
}

impl Default for FleetOpts {
    fn default() -> Self {
        Self {
            agents: 2,
            sim_work_ms: 20,
            lease_loss_budget: 5,
            target_image: None,
            llm_url: None,
            auto_dream: true,
            auto_bundle_check: false,
            json_logs: false,
            per_agent_tokens: false,
            redis_url: None,
            skill_packs: None,
            agent_env: Vec::new(),
            vm_image: None,
        }
    }
}

pub struct Fleet {
    pub db: TestDb,
    pub keys: Keyspace,
    pub leases: LeaseClient,
    pub api: String,
    pub api_token: String,
    pub agent_token: String,
    pub git_secret: String,
    pub logs: PathBuf,
    pub opts: FleetOpts,
    pub coordinator: Option<Proc>,
    /// Slot i holds agent `agent-{i+1}` while it runs.
    pub agents: Vec<Option<Proc>>,
    /// Where agent i serves `/metrics`.
    pub agent_metrics: Vec<String>,
    /// With `per_agent_tokens`: agent i's own token, once issued.
    pub agent_tokens: Vec<Option<String>>,
    http: reqwest::Client,
    /// `shutdown` ran: what the agents left is theirs to answer for, and
    /// tests check it; the drop cleans up only after a failure.
    shut_down: bool,
}

impl Fleet {
    pub async fn start(opts: FleetOpts) -> Self {
        let db = TestDb::new().await;
        let keys = Keyspace::new(format!("{}:", db.schema));
        let redis = opts.redis_url.clone().unwrap_or_else(redis_url);
        let leases = LeaseClient::connect(&redis, keys.clone(), LeaseSettings::default())
            .await
            .expect("redis reachable");
        let logs = repo_root().join("target/test-logs").join(&db.schema);
        std::fs::create_dir_all(&logs).unwrap();
        let mut fleet = Self {
            api: format!("http://127.0.0.1:{}", free_port()),
            api_token: format!("api-{}", uuid::Uuid::new_v4().simple()),
            agent_token: format!("agent-{}", uuid::Uuid::new_v4().simple()),
            git_secret: format!("git-{}", uuid::Uuid::new_v4().simple()),
            db,
            keys,
            leases,
            logs,
            coordinator: None,
            agents: (0..opts.agents).map(|_| None).collect(),
            agent_metrics: (0..opts.agents)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            agent_tokens: (0..opts.agents).map(|_| None).collect(),
            opts,
            http: reqwest::Client::new(),
            shut_down: false,
        };
        fleet.start_coordinator().await;
        for i in 0..fleet.opts.agents {
            if fleet.opts.per_agent_tokens {
                let token = fleet.issue_agent_token(&fleet.agent_id(i));
                fleet.agent_tokens[i] = Some(token);
            }
            fleet.start_agent(i);
        }
        fleet.wait_agents_serving(Duration::from_secs(120)).await;
        fleet
    }

    /// Until every agent answers on its metrics address (it has registered
    /// and is about to lease). An agent that exited fails the test at once
    /// with its log, instead of a wait for work it will never do.
    async fn wait_agents_serving(&mut self, timeout: Duration) {
        let start = Instant::now();
        for i in 0..self.agents.len() {
            let url = format!("http://{}/metrics", self.agent_metrics[i]);
            loop {
                if let Ok(r) = self.http.get(&url).send().await {
                    if r.status().is_success() {
                        break;
                    }
                }
                let log = self.logs.join(format!("{}.log", Self::agent_name(i)));
                if let Some(status) = self.agents[i].as_mut().and_then(Proc::try_exited) {
                    panic!("agent {i} exited with {status}; see {}", log.display());
                }
                assert!(
                    start.elapsed() < timeout,
                    "agent {i} does not serve {url}; see {}",
                    log.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    pub async fn start_coordinator(&mut self) {
        let mut cmd = Command::new(bin("fleet-coordinator"));
        cmd.arg("serve")
            .env("FLEET_LISTEN", self.api.trim_start_matches("http://"))
            .env("FLEET_DATABASE_URL", database_url())
            .env("FLEET_PG_SCHEMA", &self.db.schema)
            .env("FLEET_REDIS_URL", self.redis_url())
            .env("FLEET_KEY_PREFIX", self.keys.prefix())
            .env("FLEET_API_TOKEN", &self.api_token)
            .env(
                "FLEET_AGENT_TOKEN",
                if self.opts.per_agent_tokens {
                    ""
                } else {
                    &self.agent_token
                },
            )
            .env(
                "FLEET_SKILL_PACKS",
                self.opts
                    .skill_packs
                    .clone()
                    .unwrap_or_else(|| repo_root().join("skill-packs")),
            )
            .env("FLEET_GIT_SECRET", &self.git_secret)
            .env("FLEET_KNOWLEDGE_DIR", self.knowledge_dir())
            .arg("--lease-loss-budget")
            .arg(self.opts.lease_loss_budget.to_string())
            .arg("--auto-dream")
            .arg(self.opts.auto_dream.to_string())
            .arg("--auto-bundle-check")
            .arg(self.opts.auto_bundle_check.to_string())
            .env(
                "FLEET_LOG_FORMAT",
                if self.opts.json_logs { "json" } else { "text" },
            );
        if let Some(image) = &self.opts.target_image {
            cmd.env("FLEET_SCAN_IMAGE", image);
        }
        self.coordinator = Some(Proc::spawn(
            "coordinator",
            cmd,
            &self.logs.join("coordinator.log"),
        ));
        self.wait_healthy(Duration::from_secs(30)).await;
    }

    /// The Redis this fleet runs on.
    pub fn redis_url(&self) -> String {
        self.opts.redis_url.clone().unwrap_or_else(redis_url)
    }

    async fn wait_healthy(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.api)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.coordinator.as_mut().and_then(Proc::try_exited) {
                panic!(
                    "coordinator exited with {status}; see {}",
                    self.logs.display()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "coordinator not healthy; see {}",
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `fleet-coordinator` with `args` against this fleet's API (and
    /// its API token): (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(bin("fleet-coordinator"))
            .args(args)
            .env("FLEET_API_URL", &self.api)
            .env("FLEET_API_TOKEN", &self.api_token)
            .output()
            .expect("run fleet-coordinator");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `GET path` on the API with the API token, decoded; panics on an
    /// error status.
    pub async fn api_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let resp = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(&self.api_token)
            .send()
            .await
            .expect("api reachable");
        let status = resp.status();
        let body = resp.text().await.expect("api body");
        assert!(status.is_success(), "GET {path}: {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// A new token for `agent`, issued through the CLI.
    pub fn issue_agent_token(&self, agent: &str) -> String {
        let (ok, out, err) = self.cli(&["agents", "issue", agent, "--by", "test"]);
        assert!(ok, "agents issue {agent} failed: {err}");
        out.trim().to_owned()
    }

    pub fn agent_name(i: usize) -> String {
        format!("agent-{}", i + 1)
    }

    /// Agent i's id: its name, or with real targets, name and schema, so
    /// parallel tests never share a container name.
    pub fn agent_id(&self, i: usize) -> String {
        match self.opts.target_image {
            None => Self::agent_name(i),
            Some(_) => format!("{}-{}", self.db.schema, Self::agent_name(i)),
        }
    }

    /// The coordinator's bare knowledge repo.
    pub fn knowledge_dir(&self) -> PathBuf {
        self.logs.join("knowledge.git")
    }

    /// Agent i's cache of the knowledge repo (its `--work-dir`).
    pub fn agent_work_dir(&self, i: usize) -> PathBuf {
        self.logs.join("agents").join(Self::agent_name(i))
    }

    pub fn start_agent(&mut self, i: usize) {
        let name = Self::agent_name(i);
        let mut cmd = Command::new(bin("fleet-agent"));
        let token = self.agent_tokens[i].as_ref().unwrap_or(&self.agent_token);
        cmd.env("FLEET_COORDINATOR_URL", &self.api)
            .env("FLEET_AGENT_TOKEN", token)
            .env("FLEET_AGENT_ID", &name)
            .env("FLEET_WORK_DIR", self.agent_work_dir(i))
            .env("FLEET_METRICS_LISTEN", &self.agent_metrics[i])
            .env(
                "FLEET_LOG_FORMAT",
                if self.opts.json_logs { "json" } else { "text" },
            )
            .arg("--sim-work-ms")
            .arg(self.opts.sim_work_ms.to_string());
        if let Some(image) = &self.opts.target_image {
            // Container names derive from the agent id: unique per test.
            cmd.env("FLEET_AGENT_ID", self.agent_id(i))
                .env("FLEET_TARGET", "docker")
                .env("FLEET_BRAIN", "ssg")
                .env("FLEET_TARGET_IMAGE", image);
            if let Some(dir) = &self.opts.vm_image {
                cmd.env("FLEET_TARGET", "qemu")
                    .env("FLEET_VM_IMAGE_DIR", dir);
            }
            if let Some(url) = &self.opts.llm_url {
                cmd.env("FLEET_BRAIN", "openai")
                    .env("FLEET_LLM_URL", url)
                    .env("FLEET_LLM_MODEL", crate::fake_llm::MODEL);
            }
        }
        cmd.envs(self.opts.agent_env.iter().map(|(k, v)| (k, v)));
        self.agents[i] = Some(Proc::spawn(
            &name,
            cmd,
            &self.logs.join(format!("{name}.log")),
        ));
    }

    pub async fn submit(&self, rules: Vec<String>) -> RunId {
        self.submit_pack("sim-demo", rules).await.run
    }

    /// Submits `rules` (empty: the whole profile) of `pack`.
    pub async fn submit_pack(&self, pack: &str, rules: Vec<String>) -> SubmitRunResponse {
        self.submit_with(pack, rules, Budgets::default()).await
    }

    /// [`Fleet::submit_pack`] with these budgets.
    pub async fn submit_with(
        &self,
        pack: &str,
        rules: Vec<String>,
        budgets: Budgets,
    ) -> SubmitRunResponse {
        self.client().submit_with(pack, rules, budgets).await
    }

    pub async fn status(&self, run: RunId) -> RunStatus {
        self.client().status(run).await
    }

    /// `GET /api/v1/runs/{run}/report`.
    pub async fn report(&self, run: RunId) -> fleet_common::api::RunReport {
        self.client().report(run).await
    }

    /// Polls until the run completes.
    pub async fn wait_completed(&self, run: RunId, timeout: Duration) -> RunStatus {
        let logs = self.logs.display().to_string();
        self.client().wait_completed(run, timeout, &logs).await
    }

    fn client(&self) -> Api {
        Api::new(&self.api, &self.api_token)
    }

    /// Stops every agent with SIGTERM (they hand back and flush), then waits
    /// for the coordinator to have ingested everything on the stream.
    pub async fn stop_agents(&mut self) {
        for slot in &mut self.agents {
            if let Some(p) = slot.take() {
                p.terminate(Duration::from_secs(10)).await;
            }
        }
    }

    /// Waits until the ingester has acknowledged every entry on the stream.
    pub async fn wait_ingested(&self, timeout: Duration) {
        let start = Instant::now();
        let mut conn = self.leases.connection();
        loop {
            let groups: redis::streams::StreamInfoGroupsReply = match redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(self.keys.events())
                .query_async(&mut conn)
                .await
            {
                Ok(g) => g,
                // A connection a Redis restart broke answers one error,
                // then reconnects.
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    assert!(start.elapsed() < timeout, "xinfo groups: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => panic!("xinfo groups: {e}"),
            };
            let pending: usize = groups.groups.iter().map(|g| g.pending).sum();
            let lag: Option<usize> = groups.groups.first().and_then(|g| g.lag);
            if pending == 0 && lag == Some(0) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "stream not drained: pending={pending} lag={lag:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `git --git-dir <bare knowledge repo> args…` and returns stdout.
    pub fn knowledge_git(&self, args: &[&str], stdin: Option<&str>) -> String {
        git_output(&self.knowledge_dir(), args, stdin)
    }

    /// The commit `main` of the knowledge repo points at.
    pub fn knowledge_main(&self) -> String {
        self.knowledge_git(&["rev-parse", "refs/heads/main"], None)
            .trim()
            .to_owned()
    }

    /// Who committed each commit `main` gained since `before`, newest
    /// first, and whether `before` is still an ancestor of `main` (K1).
    pub fn main_committers_since(&self, before: &str) -> (Vec<String>, bool) {
        let log = self.knowledge_git(
            &["log", "--format=%cn", &format!("{before}..refs/heads/main")],
            None,
        );
        let committers = log.lines().map(String::from).collect();
        let ancestor = std::process::Command::new("git")
            .args(["merge-base", "--is-ancestor", before, "refs/heads/main"])
            .current_dir(self.knowledge_dir())
            .status()
            .expect("git merge-base")
            .success();
        (committers, ancestor)
    }

    /// Stops agent `i` with SIGTERM, which must end it cleanly, then checks
    /// that every outcome it got accepted in `runs` has its lease branch
    /// (K3).
    pub async fn stop_agent_and_check_branches(&mut self, i: usize, runs: &[RunId]) {
        let agent = self.agents[i].take().expect("agent running");
        let exit = agent.terminate(Duration::from_secs(60)).await;
        assert!(exit.is_some_and(|s| s.success()), "agent exit: {exit:?}");
        for &run in runs {
            let (_, missing) = self.missing_lease_branches(run).await;
            assert!(missing.is_empty(), "missing lease branches: {missing:?}");
        }
    }

    /// Whether `main` of the knowledge repo only ever moved forward (K1):
    /// its first-parent history is all of its history.
    pub fn main_only_fast_forwards(&self) -> bool {
        let count = |first_parent: bool| {
            let mut args = vec!["rev-list", "--count", "refs/heads/main"];
            if first_parent {
                args.insert(1, "--first-parent");
            }
            self.knowledge_git(&args, None)
        };
        count(true) == count(false)
    }

    /// Waits until the dream stage, which runs by itself after a run
    /// completes, has handled `run`; a failed pass fails the test.
    pub async fn wait_dreamt(&self, run: RunId) {
        let start = Instant::now();
        loop {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM dream_runs WHERE run_id = $1")
                    .bind(run.0)
                    .fetch_optional(&self.db.pool)
                    .await
                    .unwrap();
            match status.as_deref() {
                Some("done") => return,
                Some(other) => panic!("dream over run {run}: {other}; see {}", self.logs.display()),
                None => {}
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no dream over run {run}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Commits `files` (path, contents) on top of the knowledge repo's
    /// `main`, as the coordinator's dream stage does (K1).
    pub fn commit_on_main(&self, files: &[(&str, &[u8])], message: &str) -> String {
        fleet_knowledge::commit_files_on_main(&self.knowledge_dir(), files, message)
            .expect("main moved")
            .to_string()
    }

    /// K3 end to end: for every outcome an agent got accepted, the problems
    /// with its branch `agent/<agent>/<run>/<rule>-e<epoch>` in the bare
    /// repo (missing branch, no `result.json`, a fixed rule without
    /// `skills/<rule>.sh`). Empty = all there. Also returns how many
    /// branches were checked.
    pub async fn missing_lease_branches(&self, run: RunId) -> (usize, Vec<String>) {
        missing_lease_branches(&self.db.pool, &self.knowledge_dir(), run).await
    }

    /// Worktrees registered in agent i's cache (`git worktree list`); a
    /// clean cache lists only its main directory.
    pub fn agent_worktrees(&self, i: usize) -> Vec<String> {
        let repo = self.agent_work_dir(i).join("repo");
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["worktree", "list", "--porcelain"])
            .output()
            .expect("git worktree list");
        assert!(
            out.status.success(),
            "git worktree list in {}",
            repo.display()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("worktree "))
            .map(str::to_owned)
            .collect()
    }

    pub async fn shutdown(mut self) {
        self.shut_down = true;
        self.stop_agents().await;
        if let Some(c) = self.coordinator.take() {
            c.terminate(Duration::from_secs(10)).await;
        }
    }
}

/// A test that failed (or forgot `shutdown`) SIGKILLs its agents by
/// dropping them; their containers would stay, and a qemu target's VM
/// (which lives in its sandbox's pid namespace) would keep burning a core.
impl Drop for Fleet {
    fn drop(&mut self) {
        if self.shut_down || self.opts.target_image.is_none() {
            return;
        }
        self.agents.iter_mut().for_each(|a| drop(a.take()));
        for i in 0..self.agents.len() {
            let id = self.agent_id(i);
            let script =
                format!("docker ps -aq --filter label=fleet.agent={id} | xargs -r docker rm -f -v");
            let _ = std::process::Command::new("sh")
                .args(["-c", &script])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// `git --git-dir <dir> args…` with optional stdin; panics on failure.
fn git_output(git_dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or("").to_owned();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("git output");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        git_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// K3 end to end over `pool` and the bare repo `knowledge`: see
/// [`Fleet::missing_lease_branches`].
pub async fn missing_lease_branches(
    pool: &sqlx::PgPool,
    knowledge: &std::path::Path,
    run: RunId,
) -> (usize, Vec<String>) {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT rule_id, outcome, accepted_epoch, accepted_agent FROM work_items
         WHERE run_id = $1 AND accepted_agent <> 'coordinator' AND accepted_epoch IS NOT NULL",
    )
    .bind(run.0)
    .fetch_all(pool)
    .await
    .expect("accepted outcomes");
    let mut wanted = Vec::new();
    for (rule, outcome, epoch, agent) in &rows {
        let branch = format!("refs/heads/agent/{agent}/{run}/{rule}-e{epoch}");
        wanted.push(format!("{branch}:result.json"));
        if outcome == "fixed" {
            wanted.push(format!("{branch}:skills/{rule}.sh"));
        }
    }
    let mut input = wanted.join("\n");
    input.push('\n');
    let out = git_output(knowledge, &["cat-file", "--batch-check"], Some(&input));
    let missing = wanted
        .iter()
        .zip(out.lines())
        .filter(|(_, line)| line.ends_with(" missing"))
        .map(|(w, _)| w.clone())
        .collect();
    (rows.len(), missing)
}
