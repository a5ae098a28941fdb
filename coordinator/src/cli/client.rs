//! A small HTTP client for the coordinator API.

use std::time::Duration;

use anyhow::Context;
use fleet_common::api::{
    AgentInfo, AgentRevoked, ApiError, DreamReport, IssueAgentToken, IssuedAgentToken, LedgerLine,
    PromotionDecision, PromotionInfo, RunHistory, RunReport, RunStatus, SubmitRun,
    SubmitRunResponse,
};
use fleet_common::bundle::Bundle;
use fleet_common::host::{HostRow, HostRunSubmitted, SubmitCompose, SubmitHarden};
use fleet_common::RunId;
use serde::de::DeserializeOwned;

/// The server refused the request (4xx); `message` is its explanation.
/// The CLI exits with status 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    pub status: u16,
    pub message: String,
}

pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the http client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub async fn submit(&self, token: &str, req: &SubmitRun) -> anyhow::Result<SubmitRunResponse> {
        self.send(self.post("/api/v1/runs", token).json(req)).await
    }

    pub async fn dream(
        &self,
        token: &str,
        run: RunId,
        dry_run: bool,
    ) -> anyhow::Result<DreamReport> {
        let path = format!("/api/v1/runs/{run}/dream?dry_run={dry_run}");
        // A pass over a large run may take a while.
        self.send(self.post(&path, token).timeout(Duration::from_secs(600)))
            .await
    }

    pub async fn harden(
        &self,
        token: &str,
        req: &SubmitHarden,
    ) -> anyhow::Result<HostRunSubmitted> {
        self.send(
            self.post("/api/v1/harden", token)
                .json(req)
                .timeout(Duration::from_secs(120)),
        )
        .await
    }

    pub async fn check_bundle(
        &self,
        token: &str,
        req: &SubmitCompose,
    ) -> anyhow::Result<HostRunSubmitted> {
        self.send(
            self.post("/api/v1/bundle/check", token)
                .json(req)
                .timeout(Duration::from_secs(120)),
        )
        .await
    }

    pub async fn hosts(&self, run: RunId) -> anyhow::Result<Vec<HostRow>> {
        self.get(&format!("/api/v1/runs/{run}/hosts")).await
    }

    pub async fn promotions(&self, open: bool) -> anyhow::Result<Vec<PromotionInfo>> {
        self.get(&format!("/api/v1/promotions?open={open}")).await
    }

    pub async fn decide(
        &self,
        token: &str,
        id: i64,
        approve: bool,
        by: &str,
    ) -> anyhow::Result<LedgerLine> {
        let what = if approve { "approve" } else { "reject" };
        let body = PromotionDecision { by: by.to_owned() };
        let path = format!("/api/v1/promotions/{id}/{what}");
        self.send(self.post(&path, token).json(&body)).await
    }

    pub async fn issue_agent_token(
        &self,
        token: &str,
        agent: &str,
        by: &str,
    ) -> anyhow::Result<IssuedAgentToken> {
        let body = IssueAgentToken { by: by.to_owned() };
        let path = format!("/api/v1/agents/{agent}/tokens");
        self.send(self.post(&path, token).json(&body)).await
    }

    pub async fn revoke_agent(&self, token: &str, agent: &str) -> anyhow::Result<AgentRevoked> {
        self.send(self.post(&format!("/api/v1/agents/{agent}/revoke"), token))
            .await
    }

    pub async fn bundle(
        &self,
        token: &str,
        skill_pack: &str,
        profile: Option<&str>,
    ) -> anyhow::Result<Bundle> {
        let mut query = vec![("skill_pack", skill_pack)];
        query.extend(profile.map(|p| ("profile", p)));
        let url = format!("{}/api/v1/bundle", self.base);
        // The first bundle of a pack parses its datastream.
        let req = self.http.get(url).query(&query).bearer_auth(token);
        self.send(req.timeout(Duration::from_secs(120))).await
    }

    fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        decode(resp).await
    }

    pub async fn run_status(&self, run: RunId) -> anyhow::Result<RunStatus> {
        self.get(&format!("/api/v1/runs/{run}")).await
    }

    pub async fn run_report(&self, run: RunId) -> anyhow::Result<RunReport> {
        self.get(&format!("/api/v1/runs/{run}/report")).await
    }

    pub async fn run_history(&self, run: RunId) -> anyhow::Result<RunHistory> {
        self.get(&format!("/api/v1/runs/{run}/history")).await
    }

    pub async fn agents(&self) -> anyhow::Result<Vec<AgentInfo>> {
        self.get("/api/v1/agents").await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    if status.is_success() {
        return resp
            .json()
            .await
            .context("the coordinator's answer is not what this client expects");
    }
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ApiError>(&body)
        .map(|e| e.error)
        .unwrap_or_else(|_| body.trim().to_owned());
    if status.is_client_error() {
        Err(Rejected {
            status: status.as_u16(),
            message,
        }
        .into())
    } else {
        anyhow::bail!("coordinator answered {status}: {message}")
    }
}
