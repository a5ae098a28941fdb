//! `POST /api/v1/runs`, `GET /api/v1/runs/{id}`,
//! `GET /api/v1/runs/{id}/report` and `GET /api/v1/runs/{id}/history`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use fleet_common::api::{RunHistory, RunReport, RunStatus, SubmitRun, SubmitRunResponse};
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
    if resp.needs_target > 0 {
        // Recorded by the planner, not ingested: counted here. The only
        // class a rule can need beyond a container is a VM.
        let needs = fleet_common::Outcome::NeedsTarget {
            target: fleet_common::TargetClass::Vm,
        };
        let labels = [needs.kind(), needs.reason_label().unwrap_or("")];
        state
            .metrics
            .outcomes
            .with_label_values(&labels)
            .inc_by(resp.needs_target);
    }
    Ok((StatusCode::CREATED, Json(resp)))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunStatus>, ApiFailure> {
    let run = run_id(&id)?;
    found(run, status::run_status(&state.pool, run).await)
}

pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunReport>, ApiFailure> {
    let run = run_id(&id)?;
    found(run, status::run_report(&state.pool, run).await)
}

pub async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunHistory>, ApiFailure> {
    let run = run_id(&id)?;
    found(run, status::run_history(&state.pool, run).await)
}

pub(super) fn run_id(id: &str) -> Result<RunId, ApiFailure> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(RunId)
        .ok_or_else(|| ApiFailure::bad_request(format!("run id {id:?} is not a positive integer")))
}

/// An unknown run is a 404 naming it.
pub(super) fn found<T>(
    run: RunId,
    result: Result<T, CoordinatorError>,
) -> Result<Json<T>, ApiFailure> {
    match result {
        Err(CoordinatorError::NotFound) => {
            Err(ApiFailure::not_found(format!("run {run} not found")))
        }
        other => Ok(Json(other?)),
    }
}
