//! Typed calls into the lease scripts.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::error::LeaseError;
use super::scripts::SCRIPTS;
use crate::event::{Event, RejectReason, FIELD_EVENT, FIELD_REJECTED};
use crate::ids::{AgentId, Epoch, TaskId};
use crate::keys::Keyspace;
use crate::settings::LeaseSettings;
use crate::target_class::TargetClass;
use crate::task::RuleTask;

/// Expired leases one lease call reclaims on its way, at most.
const REAP_IN_LEASE_LIMIT: u32 = 16;

/// A task as the planner hands it to the queue.
#[derive(Debug, Clone)]
pub struct QueuedTask {
    pub task: RuleTask,
    /// Lower leases first; see [`QueuedTask::score`].
    pub priority: u32,
    /// Lease losses before dead-letter (DESIGN L5).
    pub lease_loss_budget: u32,
    /// Ordering groups this task counts towards until it finishes.
    pub groups: Vec<String>,
    /// Held until `group` has at most `threshold` unfinished members.
    pub hold: Option<(String, u32)>,
    /// The target class the rule needs: a `Vm` task waits in its own ready
    /// set, leased only by agents whose targets are VMs (issue 24).
    pub need: TargetClass,
}

impl QueuedTask {
    /// Priority first, then submission order (task ids grow), exact in f64.
    pub fn score(&self) -> f64 {
        (self.priority as f64) * 4_294_967_296.0 + (self.task.task.0 as u64 % 4_294_967_296) as f64
    }
}

/// A granted lease. The epoch fences every later call about this task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub task: RuleTask,
    pub epoch: Epoch,
    pub agent: AgentId,
    /// Lease deadline by Redis clock (unix ms), for information only: agents
    /// keep their own monotonic deadline (DESIGN L2).
    pub deadline_ms: i64,
}

impl Lease {
    pub fn id(&self) -> TaskId {
        self.task.task
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed { deadline_ms: i64 },
    Refused(RejectReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Accepted,
    /// This exact completion was accepted before (a retried call).
    Duplicate,
    Rejected(RejectReason),
}

impl Completion {
    pub fn is_accepted(self) -> bool {
        matches!(self, Self::Accepted | Self::Duplicate)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub requeued: u64,
    pub dead_lettered: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Every queued task, the VM-only ones included.
    pub ready: u64,
    /// The queued tasks that only an agent on VMs may lease.
    pub ready_vm: u64,
    pub leased: u64,
}

/// Client for one fleet's keyspace. Cheap to clone; all clones share one
/// multiplexed, auto-reconnecting connection.
///
/// An agent's client carries the class of its targets: it leases what that
/// class can serve and says so in its presence. Default `Container`.
#[derive(Clone)]
pub struct LeaseClient {
    conn: ConnectionManager,
    keys: Keyspace,
    settings: LeaseSettings,
    class: TargetClass,
}

impl LeaseClient {
    pub fn new(conn: ConnectionManager, keys: Keyspace, settings: LeaseSettings) -> Self {
        Self {
            conn,
            keys,
            settings,
            class: TargetClass::Container,
        }
    }

    /// This client leasing and touching presence as an agent whose targets
    /// are of class `class`.
    pub fn with_target_class(mut self, class: TargetClass) -> Self {
        self.class = class;
        self
    }

    pub fn target_class(&self) -> TargetClass {
        self.class
    }

    /// Connects with a connection manager that reconnects on its own.
    pub async fn connect(
        redis_url: &str,
        keys: Keyspace,
        settings: LeaseSettings,
    ) -> Result<Self, LeaseError> {
        let client = redis::Client::open(redis_url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::new(conn, keys, settings))
    }

    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// A raw connection for callers outside the protocol (ingester, tests).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Adds tasks Redis does not have; returns how many were new.
    /// Members of an ordering group must come before tasks held on it.
    pub async fn enqueue(&self, tasks: &[QueuedTask]) -> Result<u64, LeaseError> {
        let mut created = 0;
        // Bounded batches keep each script call short: Redis runs scripts
        // one at a time and a long one would stall every agent's renewal.
        for chunk in tasks.chunks(256) {
            let mut inv = SCRIPTS.enqueue.prepare_invoke();
            inv.arg(self.keys.prefix())
                .arg(self.settings.finished_ttl_s);
            for t in chunk {
                let hold = match &t.hold {
                    Some((group, threshold)) => format!("{group}\t{threshold}"),
                    None => String::new(),
                };
                inv.arg(t.task.task.0)
                    .arg(t.task.run.0)
                    .arg(&t.task.rule)
                    .arg(t.score())
                    .arg(t.lease_loss_budget)
                    .arg(t.groups.join("\t"))
                    .arg(hold)
                    .arg(serde_json::to_string(&t.task)?)
                    .arg(t.need.as_str());
            }
            let n: u64 = inv.invoke_async(&mut self.conn.clone()).await?;
            created += n;
        }
        Ok(created)
    }

    /// Leases the best ready task this client's target class can serve
    /// (a VM agent: the VM-only set first), or `None` when there is none.
    pub async fn lease(&self, agent: &AgentId) -> Result<Option<Lease>, LeaseError> {
        let reply: Vec<String> = SCRIPTS
            .lease
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(agent.as_str())
            .arg(self.settings.ttl_ms)
            .arg(REAP_IN_LEASE_LIMIT)
            .arg(self.settings.finished_ttl_s)
            .arg(self.class.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        grant_reply(agent, &reply)
    }

    pub async fn renew(&self, lease: &Lease) -> Result<Renewal, LeaseError> {
        let reply: Vec<String> = SCRIPTS
            .renew
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(lease.id().0)
            .arg(lease.epoch.0)
            .arg(lease.agent.as_str())
            .arg(self.settings.ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("renewed"), Some(d)) => Ok(Renewal::Renewed {
                deadline_ms: parse(d)?,
            }),
            (Some("refused"), Some(r)) => Ok(Renewal::Refused(reason(r)?)),
            _ => Err(LeaseError::Protocol(format!("renew: {reply:?}"))),
        }
    }

    /// Completes a lease with its outcome event (a `TaskCompleted`). Safe to
    /// retry: a repeat of an accepted completion answers `Duplicate`.
    pub async fn complete(&self, lease: &Lease, event: &Event) -> Result<Completion, LeaseError> {
        let reply: Vec<String> = SCRIPTS
            .complete
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(lease.id().0)
            .arg(lease.epoch.0)
            .arg(lease.agent.as_str())
            .arg(event.to_json())
            .arg(self.settings.finished_ttl_s)
            .invoke_async(&mut self.conn.clone())
            .await?;
        completion_reply(&reply)
    }

    /// Completes `lease` like [`Self::complete`] and, in the same script
    /// call, leases this agent's next task like [`Self::lease`] (issue 23):
    /// one round trip and one Redis clock reading instead of two. The next
    /// task is `None` when there is none, or when Redis is not ready to
    /// grant (L6: the agent then learns it from its next [`Self::lease`]).
    /// The grant does not depend on the verdict: a rejected completion
    /// still gets the agent its next task. Safe to retry like `complete`,
    /// but a retry whose first try's reply was lost leaves that first grant
    /// to expire and be reclaimed (L5), as a lost `lease` reply does.
    pub async fn complete_and_lease(
        &self,
        lease: &Lease,
        event: &Event,
    ) -> Result<(Completion, Option<Lease>), LeaseError> {
        let reply: Vec<String> = SCRIPTS
            .complete_lease
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(lease.id().0)
            .arg(lease.epoch.0)
            .arg(lease.agent.as_str())
            .arg(event.to_json())
            .arg(self.settings.finished_ttl_s)
            .arg(self.settings.ttl_ms)
            .arg(REAP_IN_LEASE_LIMIT)
            .arg(self.class.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        if reply.len() < 3 {
            return Err(LeaseError::Protocol(format!("complete_lease: {reply:?}")));
        }
        let completion = completion_reply(&reply[..2])?;
        let next = match grant_reply(&lease.agent, &reply[2..]) {
            Err(LeaseError::NotReady) => None,
            other => other?,
        };
        Ok((completion, next))
    }

    /// Hands a lease back without counting a loss; false if no longer held.
    pub async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let reply: String = SCRIPTS
            .release
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(lease.id().0)
            .arg(lease.epoch.0)
            .arg(lease.agent.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(reply == "released")
    }

    /// Reclaims up to `limit` expired leases (coordinator side).
    pub async fn reap(&self, limit: u32) -> Result<ReapReport, LeaseError> {
        let (requeued, dead_lettered): (u64, u64) = SCRIPTS
            .reap
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(limit)
            .arg(self.settings.finished_ttl_s)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ReapReport {
            requeued,
            dead_lettered,
        })
    }

    /// Installs an epoch generation; the one in force never decreases.
    pub async fn set_generation(&self, generation: u64) -> Result<u64, LeaseError> {
        let reply: String = SCRIPTS
            .set_generation
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(generation)
            .invoke_async(&mut self.conn.clone())
            .await?;
        parse(&reply)
    }

    /// The generation in force, or `None` if Redis has not been reconciled.
    pub async fn generation(&self) -> Result<Option<u64>, LeaseError> {
        let g: Option<u64> = self.conn.clone().get(self.keys.generation()).await?;
        Ok(g)
    }

    /// Marks the agent alive by Redis time, as an agent of this client's
    /// target class.
    pub async fn touch_agent(&self, agent: &AgentId) -> Result<(), LeaseError> {
        let _: i64 = SCRIPTS
            .touch_agent
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(agent.as_str())
            .arg(self.class.as_str())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// A new incarnation number for an agent process, for event sequences.
    pub async fn next_incarnation(&self, agent: &AgentId) -> Result<u32, LeaseError> {
        let n: u32 = self
            .conn
            .clone()
            .incr(self.keys.incarnation(agent), 1)
            .await?;
        Ok(n)
    }

    /// Appends one event to the stream (at-least-once: callers retry).
    pub async fn append_event(&self, event: &Event) -> Result<(), LeaseError> {
        let _: String = self
            .conn
            .clone()
            .xadd(self.keys.events(), "*", &[(FIELD_EVENT, event.to_json())])
            .await?;
        Ok(())
    }

    /// Appends a completion that must be recorded but never counted, with
    /// its [`FIELD_REJECTED`] reason (the agent's replay of a completion
    /// Redis lost, [`RejectReason::Unconfirmed`]).
    pub async fn append_rejected(
        &self,
        event: &Event,
        reason: RejectReason,
    ) -> Result<(), LeaseError> {
        let _: String = self
            .conn
            .clone()
            .xadd(
                self.keys.events(),
                "*",
                &[
                    (FIELD_EVENT, event.to_json()),
                    (FIELD_REJECTED, reason.as_str().to_owned()),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn queue_depth(&self) -> Result<QueueDepth, LeaseError> {
        let (ready, ready_vm, leased): (u64, u64, u64) = redis::pipe()
            .zcard(self.keys.ready())
            .zcard(self.keys.ready_vm())
            .zcard(self.keys.leases())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(QueueDepth {
            ready: ready + ready_vm,
            ready_vm,
            leased,
        })
    }

    /// Protocol counters: stale_rejected, reclaimed, dead_lettered,
    /// released (grants and completions are not counted on the hot path).
    pub async fn stats(&self) -> Result<HashMap<String, u64>, LeaseError> {
        Ok(self.conn.clone().hgetall(self.keys.stats()).await?)
    }

    /// Agents seen within `window_ms` of Redis's clock, with last-seen ms.
    pub async fn live_agents(&self, window_ms: u64) -> Result<Vec<(String, i64)>, LeaseError> {
        self.live_in(&self.keys.agents(), window_ms).await
    }

    /// Agents whose targets are VMs seen within `window_ms` of Redis's
    /// clock, with last-seen ms: who can serve a rule that needs a VM.
    pub async fn live_vm_agents(&self, window_ms: u64) -> Result<Vec<(String, i64)>, LeaseError> {
        self.live_in(&self.keys.agents_vm(), window_ms).await
    }

    async fn live_in(&self, key: &str, window_ms: u64) -> Result<Vec<(String, i64)>, LeaseError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now = secs * 1000 + micros / 1000;
        let min = now - window_ms as i64;
        Ok(conn.zrangebyscore_withscores(key, min, "+inf").await?)
    }
}

/// Parses lease.lua's reply (the grant part of complete_lease.lua's).
fn grant_reply(agent: &AgentId, reply: &[String]) -> Result<Option<Lease>, LeaseError> {
    match reply.first().map(String::as_str) {
        Some("empty") => Ok(None),
        Some("not_ready") => Err(LeaseError::NotReady),
        Some("granted") if reply.len() == 5 => {
            let task: RuleTask = serde_json::from_str(&reply[4])?;
            Ok(Some(Lease {
                task,
                epoch: Epoch(parse(&reply[2])?),
                agent: agent.clone(),
                deadline_ms: parse(&reply[3])?,
            }))
        }
        _ => Err(LeaseError::Protocol(format!("lease: {reply:?}"))),
    }
}

/// Parses complete.lua's reply (the completion part of complete_lease.lua's).
fn completion_reply(reply: &[String]) -> Result<Completion, LeaseError> {
    match (reply.first().map(String::as_str), reply.get(1)) {
        (Some("accepted"), _) => Ok(Completion::Accepted),
        (Some("duplicate"), _) => Ok(Completion::Duplicate),
        (Some("rejected"), Some(r)) => Ok(Completion::Rejected(reason(r)?)),
        _ => Err(LeaseError::Protocol(format!("complete: {reply:?}"))),
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, LeaseError> {
    s.parse()
        .map_err(|_| LeaseError::Protocol(format!("not a number: {s:?}")))
}

fn reason(s: &str) -> Result<RejectReason, LeaseError> {
    RejectReason::parse(s).ok_or_else(|| LeaseError::Protocol(format!("unknown reason {s:?}")))
}
