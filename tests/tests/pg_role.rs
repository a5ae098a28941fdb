//! Issue 9: the coordinator's Postgres role (`make deps` creates it; `make
//! fleet` runs the coordinator with it) can migrate and use its own
//! database and nothing else.

use fleet_tests::services::{database_url, unique};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

fn coordinator_url() -> String {
    std::env::var("FLEET_COORDINATOR_DATABASE_URL").unwrap_or_else(|_| {
        panic!("FLEET_COORDINATOR_DATABASE_URL is not set: run `make deps` and source .fleet/env")
    })
}

/// The SQLSTATE of `sql`'s failure; panics if it succeeded.
async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(_) => panic!("the coordinator's role was allowed: {sql}"),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
            .unwrap_or_else(|| format!("{e}")),
    }
}

#[tokio::test]
async fn the_coordinator_role_owns_its_database_and_nothing_else() {
    let url = coordinator_url();
    let mut conn = PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("the coordinator's role cannot log in ({e}): run `make deps`"));

    let attrs: (bool, bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls
           FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        attrs,
        (false, false, false, false, false),
        "superuser, createdb, createrole, replication, bypassrls"
    );
    // 42501 = insufficient_privilege.
    for sql in [
        "CREATE DATABASE intruder",
        "CREATE ROLE intruder",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT * FROM pg_authid",
        "ALTER SYSTEM SET log_statement = 'none'",
    ] {
        assert_eq!(refused(&mut conn, sql).await, "42501", "{sql}");
    }

    // Other databases are closed to it: the cluster's and the test suite's.
    let options: PgConnectOptions = url.parse().unwrap();
    let test_db = database_url()
        .parse::<PgConnectOptions>()
        .unwrap()
        .get_database()
        .unwrap_or("fleet")
        .to_owned();
    for db in ["postgres", test_db.as_str()] {
        let err = options
            .clone()
            .database(db)
            .connect()
            .await
            .err()
            .unwrap_or_else(|| panic!("the coordinator's role connected to {db}"));
        assert!(err.to_string().contains("permission denied"), "{db}: {err}");
    }

    // Its own database: the coordinator migrates and works there.
    let schema = unique("role");
    let pool = fleet_coordinator::db::connect(&url, Some(&schema))
        .await
        .expect("connect in a schema of its own database");
    fleet_coordinator::db::migrate(&pool)
        .await
        .expect("migrations apply as the coordinator's role");
    sqlx::query("INSERT INTO agents (id) VALUES ('role-check')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}
