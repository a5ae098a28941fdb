//! Wires one agent process together and takes it down in order:
//! the LLM endpoint's start check (LLM brains only) → registration → Redis → incarnation → event sender → metrics, presence →
//! runner; on shutdown the runner hands back its leases, then events are
//! flushed (bounded), then background tasks stop.

use std::sync::Arc;
use std::time::Duration;

use fleet_common::keys::Keyspace;
use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use fleet_knowledge::AgentCredentials;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::AgentError;
use crate::events::EventSink;
use crate::hosts::HostAccess;
use crate::knowledge::{default_work_dir, Knowledge};
use crate::llm::{preflight, ModelsProbe};
use crate::metrics::{serve_metrics, AgentMetrics};
use crate::presence::spawn_presence;
use crate::registration::{register, registration_for};
use crate::runner::{LlmHold, RunSummary, Runner};
use crate::settings::{AgentSettings, BrainKind, Connection, TargetKind};
use crate::workbench::Workbench;
use crate::{scap, sim};

/// How long events may take to drain after the runner stopped.
pub const EVENT_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` fires or `max_leases` were completed.
pub async fn serve(
    settings: AgentSettings,
    shutdown: CancellationToken,
) -> Result<RunSummary, AgentError> {
    // A wrong URL, key or model must stop the agent here, before it takes
    // a lease it could only escalate.
    let llm_probe = match settings.brain {
        BrainKind::Openai => {
            let probe = ModelsProbe::new(&settings.llm)?;
            if !preflight(&probe, settings.llm.start_wait, &shutdown).await? {
                return Ok(RunSummary::default());
            }
            Some(probe)
        }
        BrainKind::Sim | BrainKind::Ssg => None,
    };
    let Some(Joined {
        redis_url,
        keys,
        lease,
        git,
        incarnation,
    }) = resolve(&settings, &shutdown).await?
    else {
        return Ok(RunSummary::default());
    };
    lease.validate().map_err(AgentError::Config)?;
    let Some(client) = until_ok("connect to redis", &shutdown, || {
        LeaseClient::connect(&redis_url, keys.clone(), lease)
    })
    .await
    else {
        return Ok(RunSummary::default());
    };
    // What this agent leases and says it is in its presence (issue 24).
    let class = settings.target.kind.class();
    let client = client.with_target_class(class);
    let agent = settings.agent.clone();
    // The coordinator numbers incarnations in Postgres, so a Redis that
    // lost its data cannot hand out a number twice; without a coordinator
    // (or from an older one), Redis counts.
    let incarnation = match incarnation {
        Some(n) => n,
        None => {
            let Some(n) = until_ok("take an incarnation", &shutdown, || {
                client.next_incarnation(&agent)
            })
            .await
            else {
                return Ok(RunSummary::default());
            };
            n
        }
    };
    info!(agent = %agent, incarnation, key_prefix = keys.prefix(), target_class = %class, "agent starting");

    let metrics = AgentMetrics::new();
    let knowledge = match git {
        Some((url, password)) => open_knowledge(&settings, url, password, &metrics).await,
        None => None,
    };
    let background = CancellationToken::new();
    if let Some(addr) = settings.metrics_listen {
        serve_metrics(addr, metrics.clone(), background.clone()).await?;
    }
    let sink = EventSink::start(client.clone(), agent.clone(), incarnation, metrics.clone());
    let presence = spawn_presence(client.clone(), agent.clone(), background.clone());

    let (benches, machines) = match workbenches(&settings).await {
        Ok(b) => b,
        Err(e) => {
            sink.close(EVENT_FLUSH_DEADLINE).await;
            background.cancel();
            let _ = presence.await;
            return Err(e);
        }
    };
    let llm_hold = llm_probe.filter(|_| settings.llm.hold).map(|probe| {
        LlmHold::new(
            probe,
            settings.llm.probe_max,
            metrics.clone(),
            shutdown.clone(),
        )
    });
    let summary = Runner::new(client, sink.clone(), metrics, settings.max_leases, shutdown)
        .with_knowledge(knowledge)
        .with_llm_hold(llm_hold)
        .with_llm_outage_escalating(!settings.llm.hold)
        .with_host_access(host_access(&settings))
        .run(benches)
        .await;
    scap::remove_all(&machines).await;

    sink.close(EVENT_FLUSH_DEADLINE).await;
    background.cancel();
    let _ = presence.await;
    info!(agent = %agent, completed = summary.completed, "agent stopped");
    Ok(summary)
}

/// One workbench per slot, and the real machines behind them (removed at
/// shutdown; none for the simulation).
async fn workbenches(
    settings: &AgentSettings,
) -> Result<(Vec<Workbench>, Vec<Arc<scap::Machine>>), AgentError> {
    match settings.target.kind {
        TargetKind::Sim => Ok((
            (0..settings.slots.max(1))
                .map(|_| sim::workbench(settings.sim_work))
                .collect(),
            Vec::new(),
        )),
        TargetKind::Docker | TargetKind::Ssh | TargetKind::Qemu => {
            scap::real_workbenches(settings).await
        }
    }
}

/// How harden tasks reach inventory hosts: only agents on real targets
/// have a Docker engine for the SSH sandbox.
fn host_access(settings: &AgentSettings) -> Option<HostAccess> {
    if settings.target.kind == TargetKind::Sim {
        return None;
    }
    let agent = settings.agent.as_str().to_owned();
    match fleet_targets::connect_docker() {
        Ok(docker) => Some(HostAccess {
            docker,
            work_dir: settings
                .work_dir
                .clone()
                .unwrap_or_else(|| default_work_dir(&agent)),
            agent,
            sandbox_image: settings.target.sandbox_image.clone(),
        }),
        Err(e) => {
            warn!(error = %e, "no Docker engine: this agent cannot harden inventory hosts");
            None
        }
    }
}

/// The knowledge repo's URL and this agent's git password.
type GitAccess = Option<(String, String)>;

/// Redis URL, keyspace, lease timing and git access, from the coordinator
/// or the flags (no knowledge repo without a coordinator).
/// What joining the fleet gave this agent.
struct Joined {
    redis_url: String,
    keys: Keyspace,
    lease: LeaseSettings,
    git: GitAccess,
    /// Numbered by the coordinator; `None`: take one from Redis.
    incarnation: Option<u32>,
}

async fn resolve(
    settings: &AgentSettings,
    shutdown: &CancellationToken,
) -> Result<Option<Joined>, AgentError> {
    match &settings.connection {
        Connection::Direct {
            redis_url,
            key_prefix,
            lease,
        } => Ok(Some(Joined {
            redis_url: redis_url.clone(),
            keys: Keyspace::new(key_prefix.clone()),
            lease: *lease,
            git: None,
            incarnation: None,
        })),
        Connection::Coordinator { url, token } => {
            let answer = register(url, token, &registration_for(&settings.agent), shutdown).await?;
            Ok(answer.map(|c| Joined {
                git: c.knowledge_url.zip(c.git_password),
                redis_url: c.redis_url,
                keys: Keyspace::new(c.key_prefix),
                lease: c.lease,
                incarnation: c.incarnation,
            }))
        }
    }
}

/// Opens the knowledge cache and cleans leftovers. A failure is logged and
/// counted, and the agent works without the knowledge repo rather than not
/// at all.
async fn open_knowledge(
    settings: &AgentSettings,
    url: String,
    password: String,
    metrics: &AgentMetrics,
) -> Option<Knowledge> {
    let agent = settings.agent.as_str().to_owned();
    let work_dir = settings
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&agent));
    let creds = AgentCredentials {
        agent_id: agent,
        token: password,
    };
    match Knowledge::open(work_dir.clone(), url.clone(), creds).await {
        Ok(k) => Some(k.with_patience(settings.knowledge_patience)),
        Err(e) => {
            metrics.knowledge_errors.inc();
            error!(error = %e, work_dir = %work_dir.display(), url, "knowledge repo unusable; working without it");
            None
        }
    }
}

/// Retries a Redis call at startup until it works; `None` on shutdown.
/// Redis may start after the agent, so failing here would only make the
/// supervisor restart us into the same wait.
async fn until_ok<T, E, F, Fut>(what: &str, shutdown: &CancellationToken, mut call: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        let r = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = call() => r,
        };
        match r {
            Ok(v) => return Some(v),
            Err(e) => warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "could not {what}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}
