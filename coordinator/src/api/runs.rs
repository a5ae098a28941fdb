//! `POST /api/v1/runs` and `GET /api/v1/runs/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use fleet_common::api::{RunStatus, SubmitRun, SubmitRunResponse};
use fleet_common::RunId;

use super::auth::ApiToken;
use super::error::ApiFailure;
use super::json::ApiJson;
use super::AppState;
use crate::error::CoordinatorError;
use crate::{planner, status};

pub async fn submit(
    State(state): State<AppState>,
    _auth: ApiToken,
    ApiJson(req): ApiJson<SubmitRun>,
) -> Result<(StatusCode, Json<SubmitRunResponse>), ApiFailure> {
    let resp = planner::submit(&state.pool, &state.leases, &state.packs, req).await?;
    state.metrics.runs_submitted.inc();
    Ok((StatusCode::CREATED, Json(resp)))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunStatus>, ApiFailure> {
    let run = id
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(RunId)
        .ok_or_else(|| {
            ApiFailure::bad_request(format!("run id {id:?} is not a positive integer"))
        })?;
    match status::run_status(&state.pool, run).await {
        Err(CoordinatorError::NotFound) => {
            Err(ApiFailure::not_found(format!("run {run} not found")))
        }
        other => Ok(Json(other?)),
    }
}
