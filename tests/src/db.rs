//! A Postgres pool on a fresh, migrated schema per test.

use sqlx::PgPool;

use crate::services::{database_url, unique};

pub struct TestDb {
    pub pool: PgPool,
    pub schema: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let schema = unique("t");
        let url = database_url();
        let pool = fleet_coordinator::db::connect(&url, Some(&schema))
            .await
            .unwrap_or_else(|e| {
                panic!("postgres is not reachable at {url} ({e}): run `make deps` first")
            });
        fleet_coordinator::db::migrate(&pool)
            .await
            .expect("migrations apply");
        Self { pool, schema }
    }

    /// Drops the schema (tests leave theirs for a post-mortem and
    /// `scripts/test.sh` clears them; a bench's rows would only slow the
    /// next one's checkpoints).
    pub async fn drop_schema(&self) -> anyhow::Result<()> {
        sqlx::raw_sql(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
