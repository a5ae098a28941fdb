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
}
