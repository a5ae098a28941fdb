//! `GET /healthz` and `GET /metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use super::AppState;

/// Each store gets this long to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 `ok` when Postgres and Redis both answer, else 503 naming the ones
/// that did not.
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let pg = tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&state.pool));
    let mut conn = state.leases.connection();
    let ping = redis::cmd("PING");
    let redis = tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<String>(&mut conn));
    let (pg, redis) = tokio::join!(pg, redis);
    let mut failed = Vec::new();
    if !matches!(pg, Ok(Ok(_))) {
        failed.push("postgres");
    }
    if !matches!(redis, Ok(Ok(_))) {
        failed.push("redis");
    }
    if failed.is_empty() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unavailable: {}", failed.join(", ")),
        )
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
