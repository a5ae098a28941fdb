//! Postgres pool and embedded migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

use crate::error::CoordinatorError;

/// Connects a pool. With `schema`, the schema is created if missing and every
/// pooled connection uses it as its only `search_path`, so tests (or fleets)
/// can share one database without seeing each other's tables.
pub async fn connect(database_url: &str, schema: Option<&str>) -> Result<PgPool, CoordinatorError> {
    let options: PgConnectOptions = database_url
        .parse()
        .map_err(|e| CoordinatorError::Config(format!("database url is not valid: {e}")))?;
    let mut pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5));
    if let Some(schema) = schema {
        check_schema_name(schema)?;
        create_schema(&options, schema).await?;
        let set_path = format!("SET search_path TO \"{schema}\"");
        pool = pool.after_connect(move |conn, _meta| {
            let set_path = set_path.clone();
            Box::pin(async move {
                conn.execute(set_path.as_str()).await?;
                Ok(())
            })
        });
    }
    Ok(pool.connect_with(options).await?)
}

/// Runs the embedded migrations. sqlx's migrator holds a Postgres advisory
/// lock while it runs, so two coordinators starting at once are safe: the
/// second waits and then finds nothing left to apply.
pub async fn migrate(pool: &PgPool) -> Result<(), CoordinatorError> {
    sqlx::migrate!("../migrations").run(pool).await?;
    Ok(())
}

async fn create_schema(options: &PgConnectOptions, schema: &str) -> Result<(), CoordinatorError> {
    let mut conn = options.connect().await?;
    let created = conn
        .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
        .await;
    match created {
        Ok(_) => Ok(()),
        // Two connections racing on IF NOT EXISTS can still collide on the
        // catalog's unique index; the schema exists either way.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The name is spliced into SQL, so only a plain identifier is accepted.
fn check_schema_name(schema: &str) -> Result<(), CoordinatorError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CoordinatorError::Config(format!(
            "postgres schema {schema:?} must be 1-63 characters of [A-Za-z0-9_], not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("t_0193ab_cd").is_ok());
        for bad in ["", "1abc", "a-b", "a\"b", "a;drop", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
