//! The dream stage by hand: `POST /api/v1/runs/{id}/dream` (`?dry_run=true`
//! shows what would change), and the promotion ledger:
//! `GET /api/v1/promotions` (`?open=true`: escalations waiting for an
//! operator), `POST /api/v1/promotions/{id}/approve|reject`.

use axum::extract::{Path, Query, State};
use axum::Json;
use fleet_common::api::{DreamReport, LedgerLine, PromotionDecision, PromotionInfo};
use serde::Deserialize;

use super::auth::ApiToken;
use super::error::ApiFailure;
use super::json::ApiJson;
use super::runs::{found, run_id};
use super::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct DreamQuery {
    #[serde(default)]
    dry_run: bool,
}

pub async fn dream(
    State(state): State<AppState>,
    _auth: ApiToken,
    Path(id): Path<String>,
    Query(q): Query<DreamQuery>,
) -> Result<Json<DreamReport>, ApiFailure> {
    let run = run_id(&id)?;
    found(run, state.dreamer.dream(run, q.dry_run).await)
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    open: bool,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<PromotionInfo>>, ApiFailure> {
    Ok(Json(state.dreamer.promotions(q.open).await?))
}

pub async fn approve(
    state: State<AppState>,
    auth: ApiToken,
    id: Path<String>,
    body: ApiJson<PromotionDecision>,
) -> Result<Json<LedgerLine>, ApiFailure> {
    decide(state, auth, id, body, true).await
}

pub async fn reject(
    state: State<AppState>,
    auth: ApiToken,
    id: Path<String>,
    body: ApiJson<PromotionDecision>,
) -> Result<Json<LedgerLine>, ApiFailure> {
    decide(state, auth, id, body, false).await
}

async fn decide(
    State(state): State<AppState>,
    _auth: ApiToken,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PromotionDecision>,
    approve: bool,
) -> Result<Json<LedgerLine>, ApiFailure> {
    let ledger = id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiFailure::bad_request(format!("ledger id {id:?} is not a positive integer"))
    })?;
    let by = body.by.trim();
    if by.is_empty() || by.len() > 100 {
        return Err(ApiFailure::bad_request(
            "`by` must name who decides (1 to 100 characters)",
        ));
    }
    match state.dreamer.decide(ledger, approve, by).await {
        Err(crate::CoordinatorError::NotFound) => Err(ApiFailure::not_found(format!(
            "ledger entry {ledger} not found"
        ))),
        other => Ok(Json(other?)),
    }
}
