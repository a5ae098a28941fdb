//! Shared by the agent's integration tests: a real Redis under a fresh key
//! prefix per test, task fixtures, stream readers, and a TCP proxy that can
//! stall or drop the connection to Redis.

#![allow(dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_agent::sim::{behaviour, SimBehaviour};
use fleet_common::event::{Delivered, FIELD_EVENT, FIELD_REJECTED};
use fleet_common::keys::Keyspace;
use fleet_common::lease::{Lease, LeaseClient, QueuedTask};
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Budgets, Epoch, RuleTask, RunId, TaskId};
use redis::AsyncCommands;

pub fn redis_url() -> String {
    std::env::var("FLEET_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:56379".into())
}

/// A client on a fresh key prefix; panics if Redis is not there, because a
/// skipped test would pass for the wrong reason.
pub async fn fresh_client(settings: LeaseSettings) -> LeaseClient {
    let prefix = format!("t-{}:", uuid::Uuid::new_v4());
    client_at(&redis_url(), &prefix, settings).await
}

pub async fn client_at(url: &str, prefix: &str, settings: LeaseSettings) -> LeaseClient {
    match tokio::time::timeout(
        Duration::from_secs(5),
        LeaseClient::connect(url, Keyspace::new(prefix), settings),
    )
    .await
    {
        Ok(Ok(c)) => c,
        other => panic!(
            "these tests need Redis at {url} (set FLEET_REDIS_URL, or run `scripts/deps.sh`): {:?}",
            other.map(|r| r.err())
        ),
    }
}

pub fn rule_task(id: i64, rule: &str, budgets: Budgets) -> RuleTask {
    RuleTask {
        run: RunId(1),
        task: TaskId(id),
        rule: rule.to_owned(),
        family: "sim_family".into(),
        skill_pack: "sim".into(),
        profile: "sim_profile".into(),
        budgets,
        checks: Default::default(),
        rule_text: None,
        job: None,
    }
}

/// The first `rule_{i}` whose sim behaviour is `want`.
pub fn rule_with(want: SimBehaviour) -> String {
    (0..100_000)
        .map(|i| format!("rule_{i}"))
        .find(|r| behaviour(r) == want)
        .expect("some rule has every behaviour")
}

/// Enqueues `tasks` and opens the queue (generation 1).
pub async fn enqueue(client: &LeaseClient, tasks: &[RuleTask]) {
    let queued: Vec<QueuedTask> = tasks
        .iter()
        .map(|t| QueuedTask {
            task: t.clone(),
            priority: 100,
            lease_loss_budget: 5,
            groups: Vec::new(),
            hold: None,
            need: fleet_common::TargetClass::Container,
        })
        .collect();
    assert_eq!(client.enqueue(&queued).await.unwrap(), tasks.len() as u64);
    client.set_generation(1).await.unwrap();
}

/// Leases one task as `agent` (panics if the queue is empty).
pub async fn lease_one(client: &LeaseClient, agent: &str) -> Lease {
    client
        .lease(&AgentId::parse(agent).unwrap())
        .await
        .unwrap()
        .expect("a task is ready")
}

pub async fn task_field(client: &LeaseClient, task: TaskId, field: &str) -> Option<String> {
    client
        .connection()
        .hget(client.keys().task(task), field)
        .await
        .unwrap()
}

pub async fn redis_now_ms(client: &LeaseClient) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut client.connection())
        .await
        .unwrap();
    s * 1000 + us / 1000
}

/// Every entry of the event stream, decoded, in stream order.
pub async fn stream(client: &LeaseClient) -> Vec<Delivered> {
    let entries: redis::streams::StreamRangeReply = client
        .connection()
        .xrange_all(client.keys().events())
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .map(|entry| {
            let field = |name: &str| -> Option<Vec<u8>> {
                entry
                    .map
                    .get(name)
                    .map(|v| redis::from_redis_value(v.clone()).unwrap())
            };
            Delivered::decode(
                field(FIELD_EVENT).as_deref(),
                field(FIELD_REJECTED).as_deref(),
            )
            .expect("every event in the stream decodes")
        })
        .collect()
}

/// Asserts that, per (agent, incarnation), the seqs in the stream are
/// exactly 1..=max (duplicates of one event id allowed) and first appear
/// in ascending order.
pub fn assert_gapless(events: &[Delivered]) {
    let mut per: BTreeMap<(String, u32), Vec<u64>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for d in events {
        let e = &d.event;
        if e.agent.as_str() == "coordinator" || !seen.insert(e.id.clone()) {
            continue;
        }
        per.entry((e.agent.to_string(), e.incarnation))
            .or_default()
            .push(e.seq);
    }
    for (key, seqs) in per {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "seqs of {key:?} are not 1..n in order");
    }
}

pub fn sample_lease(task: RuleTask) -> Lease {
    Lease {
        task,
        epoch: Epoch((1 << Epoch::GRANT_BITS) | 1),
        agent: AgentId::parse("agent-test").unwrap(),
        deadline_ms: 0,
    }
}

/// Deletes every key under the client's prefix (call at the end of a test;
/// a failed test leaves its keys for inspection).
pub async fn cleanup(client: &LeaseClient) {
    let mut conn = client.connection();
    let pattern = format!("{}*", client.keys().prefix());
    let keys: Vec<String> = {
        let mut iter: redis::AsyncIter<String> = conn.scan_match(&pattern).await.unwrap();
        let mut keys = Vec::new();
        while let Some(k) = iter.next_item().await {
            keys.push(k.unwrap());
        }
        keys
    };
    if !keys.is_empty() {
        let _: () = client.connection().del(keys).await.unwrap();
    }
}
