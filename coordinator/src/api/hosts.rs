//! `POST /api/v1/harden` (roll `main`'s bundle out to an inventory),
//! `POST /api/v1/bundle/check` (the bundle's composition check on a fresh
//! target) and `GET /api/v1/runs/{id}/hosts` (each host's state and
//! report). Submissions take the API token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use fleet_common::bundle::Bundle;
use fleet_common::host::{HostRow, HostRunSubmitted, SubmitCompose, SubmitHarden};
use fleet_common::RunId;

use super::auth::ApiToken;
use super::error::ApiFailure;
use super::json::ApiJson;
use super::runs::run_id;
use super::AppState;
use crate::error::CoordinatorError;
use crate::hosts::{self, HostRun};

pub async fn harden(
    State(state): State<AppState>,
    _auth: ApiToken,
    ApiJson(req): ApiJson<SubmitHarden>,
) -> Result<(StatusCode, Json<HostRunSubmitted>), ApiFailure> {
    let r = &req.rollout;
    if r.concurrency == 0 || r.max_fail_percent > 100 {
        return Err(ApiFailure::bad_request(
            "rollout: concurrency must be at least 1 and max_fail_percent at most 100",
        ));
    }
    let pack = state.packs.get(&req.skill_pack)?;
    let bundle = bundle_of(&state, &req.skill_pack, req.profile.as_deref()).await?;
    if bundle.sections.is_empty() {
        return Err(CoordinatorError::Conflict(format!(
            "main holds no verified skill for the rules of {} yet: run a learning run first (`make fleet`)",
            bundle.profile
        ))
        .into());
    }
    let run = HostRun::harden(&pack, &bundle, req.hosts, req.check_only, req.rollout);
    let hosts = run.items.len() as u64;
    let id = hosts::submit_and_release(&state.pool, &state.leases, &run).await?;
    Ok((StatusCode::CREATED, Json(submitted(id, hosts, &bundle))))
}

pub async fn check(
    State(state): State<AppState>,
    _auth: ApiToken,
    ApiJson(req): ApiJson<SubmitCompose>,
) -> Result<(StatusCode, Json<HostRunSubmitted>), ApiFailure> {
    let pack = state.packs.get(&req.skill_pack)?;
    let bundle = bundle_of(&state, &req.skill_pack, req.profile.as_deref()).await?;
    let run = HostRun::compose(&pack, &bundle, None);
    let id = hosts::submit_and_release(&state.pool, &state.leases, &run).await?;
    Ok((StatusCode::CREATED, Json(submitted(id, 1, &bundle))))
}

pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<HostRow>>, ApiFailure> {
    let run = run_id(&id)?;
    let rows = hosts::host_rows(&state.pool, run).await?;
    if rows.is_empty() {
        return Err(CoordinatorError::NotFound.into());
    }
    Ok(Json(rows))
}

async fn bundle_of(
    state: &AppState,
    skill_pack: &str,
    profile: Option<&str>,
) -> Result<Bundle, CoordinatorError> {
    let knowledge = state.dreamer.knowledge_dir();
    let profile = profile.filter(|p| !p.is_empty());
    hosts::current_bundle(&state.pool, &state.packs, knowledge, skill_pack, profile).await
}

fn submitted(run: RunId, hosts: u64, bundle: &Bundle) -> HostRunSubmitted {
    HostRunSubmitted {
        run,
        hosts,
        skills: bundle.sections.len() as u64,
        main_commit: bundle.main_commit.clone(),
    }
}
