//! A lease queue on its own key prefix, and task fixtures.

use fleet_common::event::{Event, EventBody, EVENT_VERSION};
use fleet_common::keys::Keyspace;
use fleet_common::lease::{Lease, LeaseClient, QueuedTask};
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Budgets, EventId, Outcome, RuleTask, RunId, TaskId};
use redis::AsyncCommands;

use crate::services::{redis_url, require_redis, unique};

pub struct TestQueue {
    pub client: LeaseClient,
    pub keys: Keyspace,
}

impl TestQueue {
    pub async fn new(settings: LeaseSettings) -> Self {
        require_redis().await;
        let keys = Keyspace::new(format!("{}:", unique("t")));
        let client = LeaseClient::connect(&redis_url(), keys.clone(), settings)
            .await
            .expect("connect lease client");
        Self { client, keys }
    }

    /// Another client on the same keyspace with other settings, like a
    /// second agent process.
    pub async fn peer(&self, settings: LeaseSettings) -> LeaseClient {
        LeaseClient::connect(&redis_url(), self.keys.clone(), settings)
            .await
            .expect("connect peer")
    }

    pub fn conn(&self) -> redis::aio::ConnectionManager {
        self.client.connection()
    }

    /// Deletes every key under this prefix, like a Redis that lost its data.
    pub async fn wipe(&self) {
        let mut conn = self.conn();
        let pattern = format!("{}*", self.keys.prefix());
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> = conn.scan_match(&pattern).await.unwrap();
            let mut v = Vec::new();
            while let Some(k) = iter.next_item().await {
                v.push(k.unwrap());
            }
            v
        };
        if !keys.is_empty() {
            let _: () = conn.del(keys).await.unwrap();
        }
    }

    pub async fn task_field(&self, task: TaskId, field: &str) -> Option<String> {
        self.conn().hget(self.keys.task(task), field).await.unwrap()
    }

    pub async fn stat(&self, name: &str) -> u64 {
        let v: Option<u64> = self.conn().hget(self.keys.stats(), name).await.unwrap();
        v.unwrap_or(0)
    }

    /// All stream entries as (event, rejected reason) pairs, oldest first.
    pub async fn stream(&self) -> Vec<(Event, Option<String>)> {
        let reply: redis::streams::StreamRangeReply =
            self.conn().xrange_all(self.keys.events()).await.unwrap();
        reply
            .ids
            .iter()
            .map(|entry| {
                let raw: String = entry.get("e").expect("entry without event");
                let rejected: Option<String> = entry.get("rejected");
                (
                    Event::decode(raw.as_bytes()).expect("stream holds a valid event"),
                    rejected,
                )
            })
            .collect()
    }
}

/// A run of `n` tasks with ids `first..first+n`, rule ids `rule_<i>`.
pub fn tasks(run: i64, first: i64, n: i64, budget: u32) -> Vec<QueuedTask> {
    (first..first + n)
        .map(|id| queued(run, id, &format!("rule_{id}"), budget))
        .collect()
}

pub fn queued(run: i64, id: i64, rule: &str, budget: u32) -> QueuedTask {
    QueuedTask {
        task: RuleTask {
            run: RunId(run),
            task: TaskId(id),
            rule: rule.to_owned(),
            family: rule.to_owned(),
            skill_pack: "test".into(),
            profile: "test".into(),
            budgets: Budgets::default(),
            checks: Default::default(),
            rule_text: None,
            job: None,
        },
        priority: 100,
        need: fleet_common::TargetClass::Container,
        lease_loss_budget: budget,
        groups: vec![],
        hold: None,
    }
}

pub fn agent(name: &str) -> AgentId {
    AgentId::parse(name).unwrap()
}

/// The `TaskCompleted` event an agent would send for `lease`.
pub fn completion(lease: &Lease, outcome: Outcome, seq: u64) -> Event {
    Event {
        v: EVENT_VERSION,
        id: EventId::new_v7(),
        run: lease.task.run,
        task: lease.task.task,
        rule: lease.task.rule.clone(),
        agent: lease.agent.clone(),
        incarnation: 1,
        epoch: lease.epoch,
        attempt: 0,
        seq,
        ts_ms: 0,
        body: EventBody::TaskCompleted {
            outcome,
            attempts: 1,
            duration_ms: 1,
        },
    }
}

/// Settings with a short TTL so expiry tests run in well under a second.
pub fn fast_settings(ttl_ms: u64, budget: u32) -> LeaseSettings {
    LeaseSettings {
        ttl_ms,
        renew_every_ms: ttl_ms / 4,
        safety_margin_ms: ttl_ms / 5,
        lease_loss_budget: budget,
        reap_every_ms: 50,
        idle_poll_ms: 10,
        finished_ttl_s: 3600,
    }
}
