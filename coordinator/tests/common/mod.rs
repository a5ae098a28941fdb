//! Shared fixtures: a fresh Postgres schema and Redis key prefix per test,
//! and a small skill pack on disk. A missing service fails the test loudly.

#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;
use std::time::Duration;

use fleet_common::event::EVENT_VERSION;
use fleet_common::keys::Keyspace;
use fleet_common::lease::LeaseClient;
use fleet_common::settings::LeaseSettings;
use fleet_common::{AgentId, Epoch, Event, EventBody, EventId, RunId, TaskId};
use fleet_coordinator::api::AppState;
use fleet_coordinator::{db, SkillPacks};
use sqlx::PgPool;

pub const PACK: &str = r#"
name = "demo"
profile = "standard"
[[family]]
pattern = "audit_rules_dac_modification_*"
name = "audit_rules_dac_modification"
[[ordering]]
rule = "audit_rules_immutable"
after = "audit_rules_*"
remaining = 0
"#;

pub fn redis_url() -> String {
    std::env::var("FLEET_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:56379".into())
}

pub fn database_url() -> String {
    std::env::var("FLEET_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://fleet:fleet@127.0.0.1:55432/fleet".into())
}

pub struct TestEnv {
    pub pool: PgPool,
    pub schema: String,
    pub leases: LeaseClient,
    pub packs: SkillPacks,
    pub packs_dir: PathBuf,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_settings(LeaseSettings::default()).await
    }

    pub async fn with_settings(settings: LeaseSettings) -> Self {
        Self::with_redis(&redis_url(), settings).await
    }

    pub async fn with_redis(redis: &str, settings: LeaseSettings) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("t_{id}");
        let url = database_url();
        let pool = tokio::time::timeout(Duration::from_secs(20), db::connect(&url, Some(&schema)))
            .await
            .unwrap_or_else(|_| {
                panic!("postgres at {url} did not answer within 20 s: run `make deps`")
            })
            .unwrap_or_else(|e| {
                panic!("postgres is not reachable at {url} ({e}): run `make deps`")
            });
        db::migrate(&pool).await.expect("migrations apply");
        let leases = tokio::time::timeout(
            Duration::from_secs(10),
            LeaseClient::connect(redis, Keyspace::new(format!("t-{id}:")), settings),
        )
        .await
        .unwrap_or_else(|_| panic!("redis at {redis} did not answer within 10 s: run `make deps`"))
        .unwrap_or_else(|e| panic!("redis is not reachable at {redis} ({e}): run `make deps`"));
        let packs_dir = std::env::temp_dir().join(format!("coordinator-packs-{id}"));
        std::fs::create_dir_all(packs_dir.join("demo")).unwrap();
        std::fs::write(packs_dir.join("demo/pack.toml"), PACK).unwrap();
        Self {
            pool,
            schema,
            packs: SkillPacks::new(&packs_dir),
            packs_dir,
            leases,
        }
    }

    pub fn state(&self, metrics: fleet_coordinator::Metrics) -> AppState {
        AppState {
            metrics: metrics.clone(),
            pool: self.pool.clone(),
            leases: self.leases.clone(),
            packs: self.packs.clone(),
            api_token: "api-token".into(),
            agent_token: "agent-token".into(),
            agent_config: fleet_common::api::AgentConfig {
                redis_url: redis_url(),
                key_prefix: self.leases.keys().prefix().to_owned(),
                lease: *self.leases.settings(),
                knowledge_url: None,
                git_password: None,
                incarnation: None,
            },
            git_secret: String::new(),
            access: Default::default(),
            // Nothing here dreams: a repo path that is never created.
            dreamer: fleet_coordinator::dream::Dreamer::new(
                self.pool.clone(),
                self.packs.clone(),
                std::env::temp_dir().join("fleet-no-knowledge-repo"),
                metrics.clone(),
            ),
        }
    }

    /// Every Redis key of this test's prefix.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut conn = self.leases.connection();
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.leases.keys().prefix()))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// Simulates a Redis that came back empty.
    pub async fn wipe_redis(&self) {
        let keys = self.redis_keys().await;
        if !keys.is_empty() {
            let _: u64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut self.leases.connection())
                .await
                .unwrap();
        }
    }

    pub async fn cleanup(self) {
        self.wipe_redis().await;
        let _ = sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
            .execute(&self.pool)
            .await;
        let _ = std::fs::remove_dir_all(&self.packs_dir);
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

pub fn event(
    run: RunId,
    task: TaskId,
    rule: &str,
    epoch: Epoch,
    seq: u64,
    body: EventBody,
) -> Event {
    Event {
        v: EVENT_VERSION,
        id: EventId::new_v7(),
        run,
        task,
        rule: rule.into(),
        agent: AgentId("agent-1".into()),
        incarnation: 1,
        epoch,
        attempt: 1,
        seq,
        ts_ms: chrono::Utc::now().timestamp_millis(),
        body,
    }
}

pub fn submission(rules: &[&str]) -> fleet_common::api::SubmitRun {
    serde_json::from_value(serde_json::json!({ "skill_pack": "demo", "rules": rules })).unwrap()
}

/// Removes what a test that ran the binary left: its schema and keys.
pub async fn drop_fleet(schema: &str, prefix: &str) {
    if let Ok(pool) = db::connect(&database_url(), None).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&pool)
            .await;
    }
    let client = redis::Client::open(redis_url()).unwrap();
    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<u64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
    }
}
