//! `GET /api/v1/bundle?skill_pack=P[&profile=X]`: the bundle of `main`'s
//! skills for the profile (DESIGN H2). It carries `main`'s scripts, which
//! the git route serves only to agents, so it takes the API token.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use fleet_common::bundle::Bundle;
use serde::Deserialize;

use super::auth::ApiToken;
use super::error::ApiFailure;
use super::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleQuery {
    skill_pack: String,
    /// The pack's profile when absent.
    #[serde(default)]
    profile: Option<String>,
}

pub async fn bundle(
    State(state): State<AppState>,
    _auth: ApiToken,
    query: Result<Query<BundleQuery>, QueryRejection>,
) -> Result<Json<Bundle>, ApiFailure> {
    // A bad query is a JSON error like every other refusal.
    let Query(q) = query.map_err(|e| {
        ApiFailure::bad_request(format!(
            "{}; expected ?skill_pack=NAME[&profile=ID]",
            e.body_text()
        ))
    })?;
    let profile = q.profile.as_deref().filter(|p| !p.is_empty());
    let bundle = crate::hosts::current_bundle(
        &state.pool,
        &state.packs,
        state.dreamer.knowledge_dir(),
        &q.skill_pack,
        profile,
    )
    .await?;
    Ok(Json(bundle))
}
