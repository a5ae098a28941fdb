//! `fleet-coordinator serve`: startup, the three workers, and shutdown.
//!
//! Startup: connect Postgres, migrate, connect Redis, drain the event stream
//! (so completions already accepted by Redis reach Postgres), reconcile Redis
//! from Postgres, then run the HTTP API, the reaper and the ingester.
//!
//! Shutdown (one token, fanned out): stop accepting HTTP, stop the reaper,
//! let the ingester finish its batch (commit + ack), all within a deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use fleet_common::api::AgentConfig;
use fleet_common::keys::Keyspace;
use fleet_common::lease::LeaseClient;
use fleet_common::redact::redact_url;
use fleet_common::settings::LeaseSettings;
use fleet_knowledge::GitHttpState;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::{self, AgentAccess, RedisAcl, Revocations};
use crate::api::{self, AppState};
use crate::dream::Dreamer;
use crate::error::CoordinatorError;
use crate::hosts::HostWorker;
use crate::ingest::{drain_all, worker_consumers, Ingester};
use crate::metrics::Metrics;
use crate::packs::SkillPacks;
use crate::reaper::Reaper;
use crate::worker::Workers;
use crate::{db, reconcile};

/// How long shutdown may take before workers are aborted.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Where the knowledge repo lives unless `--knowledge-dir` says otherwise.
pub const DEFAULT_KNOWLEDGE_DIR: &str = ".fleet/knowledge.git";

/// Ingest workers beyond this would take half of the pool's 16 connections
/// from the API and the dream stage.
const MAX_INGEST_WORKERS: usize = 8;

#[derive(Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    /// Postgres schema to use (created if missing); `None` = the default
    /// search path.
    pub pg_schema: Option<String>,
    pub redis_url: String,
    /// Redis URL handed to agents; `None` = `redis_url`.
    pub advertise_redis_url: Option<String>,
    pub key_prefix: String,
    pub api_token: String,
    pub agent_token: String,
    pub skill_packs: PathBuf,
    /// Target image the planner scans to skip rules already passing.
    pub scan_image: Option<String>,
    pub lease: LeaseSettings,
    /// Consumer name in the ingest group: stable across restarts, distinct
    /// between coordinators running at the same time.
    pub consumer: String,
    /// Ingest workers (batches in flight), each its own consumer named
    /// after `consumer` ([`crate::ingest::worker_consumers`]).
    pub ingest_workers: usize,
    /// The knowledge repo (bare), created from the skill packs if missing
    /// and served to agents under `/git/`.
    pub knowledge_dir: PathBuf,
    /// Secret deriving each agent's git password; never logged.
    pub git_secret: String,
    /// Base URL agents reach this coordinator at; `None` = `http://<listen>`.
    pub advertise_url: Option<String>,
    /// Run the dream stage by itself when a run completes (else only by
    /// hand: `dream --run`).
    pub auto_dream: bool,
    /// Check `main`'s bundle on a fresh target after each learning run's
    /// dream stage (DESIGN H3).
    pub auto_bundle_check: bool,
    /// Give each agent its own Redis ACL user confined to `key_prefix`
    /// (needs a Redis user allowed `ACL SETUSER`); `false`: agents get the
    /// advertised Redis URL as is.
    pub agent_redis_acl: bool,
}

impl std::fmt::Debug for ServeConfig {
    // Tokens and passwords never reach the log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("pg_schema", &self.pg_schema)
            .field("redis_url", &redact_url(&self.redis_url))
            .field(
                "advertise_redis_url",
                &self.advertise_redis_url.as_deref().map(redact_url),
            )
            .field("key_prefix", &self.key_prefix)
            .field("skill_packs", &self.skill_packs)
            .field("scan_image", &self.scan_image)
            .field("lease", &self.lease)
            .field("consumer", &self.consumer)
            .field("ingest_workers", &self.ingest_workers)
            .field("knowledge_dir", &self.knowledge_dir)
            .field("advertise_url", &self.advertise_url)
            .field("auto_dream", &self.auto_dream)
            .field("auto_bundle_check", &self.auto_bundle_check)
            .field("agent_redis_acl", &self.agent_redis_acl)
            .finish_non_exhaustive()
    }
}

impl ServeConfig {
    /// The required settings; everything else at the CLI's defaults
    /// (listen 127.0.0.1:8080, prefix `fleet:`, packs `skill-packs`,
    /// default lease settings, consumer `coordinator`, knowledge repo
    /// `.fleet/knowledge.git`). The git secret is empty: set it before
    /// `validate`.
    pub fn new(database_url: &str, redis_url: &str, api_token: &str, agent_token: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: database_url.to_owned(),
            pg_schema: None,
            redis_url: redis_url.to_owned(),
            advertise_redis_url: None,
            key_prefix: "fleet:".to_owned(),
            api_token: api_token.to_owned(),
            agent_token: agent_token.to_owned(),
            skill_packs: PathBuf::from("skill-packs"),
            scan_image: None,
            lease: LeaseSettings::default(),
            consumer: "coordinator".to_owned(),
            ingest_workers: crate::ingest::DEFAULT_WORKERS,
            knowledge_dir: PathBuf::from(DEFAULT_KNOWLEDGE_DIR),
            git_secret: String::new(),
            advertise_url: None,
            auto_dream: true,
            auto_bundle_check: true,
            agent_redis_acl: true,
        }
    }

    pub fn validate(&self) -> Result<(), CoordinatorError> {
        let bad = |m: &str| Err(CoordinatorError::Config(m.to_owned()));
        if self.api_token.trim().is_empty() {
            return bad("the api token is empty: set --api-token or FLEET_API_TOKEN");
        }
        if self.git_secret.trim().is_empty() {
            return bad("the git secret is empty: set --git-secret or FLEET_GIT_SECRET (any long random string; agents' git passwords derive from it)");
        }
        if self.key_prefix.is_empty() {
            return bad("the key prefix is empty: use e.g. `fleet:`");
        }
        if self.consumer.is_empty() {
            return bad("the ingest consumer name is empty");
        }
        if !(1..=MAX_INGEST_WORKERS).contains(&self.ingest_workers) {
            return Err(CoordinatorError::Config(format!(
                "--ingest-workers must be 1 to {MAX_INGEST_WORKERS}, not {}",
                self.ingest_workers
            )));
        }
        self.lease.validate().map_err(CoordinatorError::Config)
    }

    /// What every agent gets at registration; the git password is added per agent.
    fn agent_config(&self, listen: SocketAddr, repo_path: &str) -> AgentConfig {
        let base = self
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        AgentConfig {
            redis_url: self
                .advertise_redis_url
                .clone()
                .unwrap_or_else(|| self.redis_url.clone()),
            key_prefix: self.key_prefix.clone(),
            lease: self.lease,
            knowledge_url: Some(format!("{}/git{repo_path}", base.trim_end_matches('/'))),
            git_password: None,
            incarnation: None,
        }
    }
}

/// Binds `config.listen` and serves until `shutdown` is cancelled.
pub async fn serve(
    config: ServeConfig,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        CoordinatorError::Config(format!("cannot listen on {}: {e}", config.listen))
    })?;
    serve_on(listener, config, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0 and read it back).
pub async fn serve_on(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    config.validate()?;
    tracing::info!(config = ?config, "coordinator starting");
    let metrics = Metrics::new();
    let Some((pool, leases)) = start(&config, &metrics, &shutdown).await? else {
        tracing::info!("shutdown requested during startup");
        return Ok(());
    };

    let packs = SkillPacks::new(&config.skill_packs).with_baseline_scan(config.scan_image.clone());
    match packs.names() {
        names if names.is_empty() => tracing::warn!(dir = %config.skill_packs.display(),
            "no skill packs found (no <dir>/<name>/pack.toml); every submission will be refused"),
        names => {
            tracing::info!(dir = %config.skill_packs.display(), packs = ?names, "skill packs found")
        }
    }
    let revoked = Revocations::from_agents(access::tokens::revoked_agents(&pool).await?);
    let redis_acl = config.agent_redis_acl.then(|| {
        RedisAcl::new(
            leases.connection(),
            &config.key_prefix,
            config.git_secret.as_bytes(),
        )
    });
    if let Some(acl) = &redis_acl {
        // Users live outside Redis's data: make sure the known agents have
        // theirs, whatever happened to Redis while no coordinator ran.
        let users = acl.regrant_all(&pool).await?;
        tracing::info!(users, "agents' redis users in place");
    }
    if config.agent_token.trim().is_empty() {
        tracing::info!("no enrollment token: agents register only with their own tokens");
    }
    let git = open_knowledge(&config)
        .await?
        .with_agent_check(revoked.allows());
    let addr = listener.local_addr()?;
    let dreamer = Dreamer::new(
        pool.clone(),
        packs.clone(),
        config.knowledge_dir.clone(),
        metrics.clone(),
    );
    let state = AppState {
        dreamer: dreamer.clone(),
        pool: pool.clone(),
        leases: leases.clone(),
        packs: packs.clone(),
        metrics: metrics.clone(),
        api_token: config.api_token.clone(),
        agent_token: config.agent_token.clone(),
        agent_config: config.agent_config(addr, &git.repo_path()),
        git_secret: config.git_secret.clone(),
        access: AgentAccess {
            revoked,
            redis_acl: redis_acl.clone(),
        },
    };
    let mut workers = Workers::new();
    let router = api::router(state).nest("/git", fleet_knowledge::router(git));
    workers.spawn("http", move |stop| async move {
        use axum::serve::ListenerExt;
        // Without TCP_NODELAY git's small exchanges stall on delayed ACKs.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(CoordinatorError::from)
    });
    let reaper = Reaper::new(pool.clone(), leases.clone(), metrics.clone()).with_acl(redis_acl);
    workers.spawn("reaper", move |stop| async move {
        reaper.run(stop).await;
        Ok(())
    });
    for consumer in worker_consumers(&config.consumer, config.ingest_workers) {
        let ingester = Ingester::new(pool.clone(), leases.clone(), metrics.clone(), consumer);
        workers.spawn("ingester", move |stop| async move {
            ingester.run(stop).await;
            Ok(())
        });
    }
    // Host runs: release held hosts, review composition checks (H3, H4).
    let hosts = HostWorker {
        pool: pool.clone(),
        leases: leases.clone(),
        packs: packs.clone(),
        knowledge_dir: config.knowledge_dir.clone(),
        metrics: metrics.clone(),
        compose_after_dreams: config.auto_bundle_check,
    };
    workers.spawn("hosts", move |stop| hosts.run(stop));
    // After a run completes: compare, revert, promote, rank (DESIGN D).
    if config.auto_dream {
        workers.spawn("dream", move |stop| async move {
            dreamer.run(stop).await;
            Ok(())
        });
    } else {
        tracing::info!("dream stage only by hand (`dream --run`)");
    }
    tracing::info!(%addr, "coordinator ready");

    tokio::select! {
        _ = shutdown.cancelled() => tracing::info!("shutting down"),
        _ = workers.failed() => {}
    }
    let result = workers
        .shutdown(tokio::time::Instant::now() + SHUTDOWN_DEADLINE)
        .await;
    match &result {
        Ok(()) => tracing::info!("coordinator stopped"),
        Err(error) => tracing::error!(%error, "coordinator stopped uncleanly"),
    }
    result
}

/// Creates the knowledge repo from the skill packs if missing (and
/// rewrites its hook and receive config), then the git route's state.
async fn open_knowledge(config: &ServeConfig) -> Result<GitHttpState, CoordinatorError> {
    let dir = config.knowledge_dir.clone();
    let packs = config.skill_packs.clone();
    let secret = config.git_secret.clone().into_bytes();
    let state = tokio::task::spawn_blocking(move || {
        fleet_knowledge::init_bare(&dir, &packs)?;
        GitHttpState::new(&dir, secret)
    })
    .await
    .map_err(|e| CoordinatorError::Config(format!("knowledge repo setup panicked: {e}")))?
    .map_err(|e| {
        CoordinatorError::Config(format!(
            "knowledge repo {}: {e}",
            config.knowledge_dir.display()
        ))
    })?;
    tracing::info!(dir = %config.knowledge_dir.display(), "knowledge repo ready");
    Ok(state)
}

/// Connects, migrates, drains and reconciles, retrying while a store is
/// still coming up. `None` if shutdown was requested meanwhile.
async fn start(
    config: &ServeConfig,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Option<(PgPool, LeaseClient)>, CoordinatorError> {
    let steps = async {
        let pool = retrying("connect to postgres", || {
            db::connect(&config.database_url, config.pg_schema.as_deref())
        })
        .await?;
        db::migrate(&pool).await?;
        let keys = Keyspace::new(config.key_prefix.clone());
        let leases = retrying("connect to redis", || async {
            Ok(LeaseClient::connect(&config.redis_url, keys.clone(), config.lease).await?)
        })
        .await?;
        // Every worker re-applies its own pending entries first.
        let ingesters: Vec<Ingester> = worker_consumers(&config.consumer, config.ingest_workers)
            .into_iter()
            .map(|consumer| Ingester::new(pool.clone(), leases.clone(), metrics.clone(), consumer))
            .collect();
        let drained = retrying("drain the event stream", || drain_all(&ingesters)).await?;
        tracing::info!(
            applied = drained.applied,
            quarantined = drained.quarantined,
            "event stream drained"
        );
        retrying("reconcile redis", || reconcile::reconcile(&pool, &leases)).await?;
        metrics.reconciliations.inc();
        Ok::<_, CoordinatorError>((pool, leases))
    };
    tokio::select! {
        _ = shutdown.cancelled() => Ok(None),
        r = steps => r.map(Some),
    }
}

/// Retries transient store errors for about a minute; configuration and
/// migration errors fail at once.
async fn retrying<T, F, Fut>(what: &'static str, f: F) -> Result<T, CoordinatorError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CoordinatorError>>,
{
    f.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(3))
            .with_max_times(25),
    )
    .when(|e| matches!(e, CoordinatorError::Postgres(_) | CoordinatorError::Redis(_) | CoordinatorError::Io(_)))
    .notify(|error, delay| tracing::warn!(step = what, %error, retry_in_ms = delay.as_millis() as u64, "startup step failed; retrying"))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_print_hides_tokens() {
        let c = ServeConfig::new(
            "postgres://u:pw@h/db",
            "redis://h",
            "TOPSECRET1",
            "TOPSECRET2",
        );
        let c = ServeConfig {
            git_secret: "TOPSECRET3".into(),
            ..c
        };
        let s = format!("{c:?}");
        assert!(!s.contains("TOPSECRET") && !s.contains("pw"), "{s}");
        assert!(c.validate().is_ok());
        let no_git = ServeConfig {
            git_secret: String::new(),
            ..c.clone()
        };
        assert!(no_git
            .validate()
            .unwrap_err()
            .to_string()
            .contains("FLEET_GIT_SECRET"));
        let empty = ServeConfig {
            api_token: " ".into(),
            ..c
        };
        assert!(empty
            .validate()
            .unwrap_err()
            .to_string()
            .contains("FLEET_API_TOKEN"));
    }

    #[test]
    fn ingest_workers_are_bounded() {
        let c = ServeConfig {
            git_secret: "s".into(),
            ..ServeConfig::new("postgres://h/db", "redis://h", "t", "")
        };
        for (workers, ok) in [
            (0, false),
            (1, true),
            (MAX_INGEST_WORKERS, true),
            (MAX_INGEST_WORKERS + 1, false),
        ] {
            let c = ServeConfig {
                ingest_workers: workers,
                ..c.clone()
            };
            assert_eq!(c.validate().is_ok(), ok, "{workers} workers");
        }
    }
}
