//! The coordinator's HTTP API as the test harnesses call it: submit a run,
//! read its status and report, wait for it to complete.

use std::time::{Duration, Instant};

use fleet_common::api::{RunReport, RunStatus, SubmitRun, SubmitRunResponse};
use fleet_common::{Budgets, RunId};

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Submits `rules` (empty: the whole profile) of `pack`.
    pub async fn submit_with(
        &self,
        pack: &str,
        rules: Vec<String>,
        budgets: Budgets,
    ) -> SubmitRunResponse {
        let req = SubmitRun {
            skill_pack: pack.into(),
            profile: None,
            rules,
            budgets,
            priority: 100,
        };
        let resp = self
            .http
            .post(format!("{}/api/v1/runs", self.base))
            .bearer_auth(&self.token)
            .json(&req)
            .send()
            .await
            .expect("submit");
        assert!(
            resp.status().is_success(),
            "submit failed: {}",
            resp.text().await.unwrap()
        );
        resp.json::<SubmitRunResponse>().await.unwrap()
    }

    pub async fn status(&self, run: RunId) -> RunStatus {
        self.http
            .get(format!("{}/api/v1/runs/{run}", self.base))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status body")
    }

    /// The status, or `None` while the coordinator does not answer (it may
    /// be restarting).
    pub async fn try_status(&self, run: RunId) -> Option<RunStatus> {
        let resp = self
            .http
            .get(format!("{}/api/v1/runs/{run}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        resp.error_for_status().ok()?.json().await.ok()
    }

    /// `GET /api/v1/runs/{run}/report`.
    pub async fn report(&self, run: RunId) -> RunReport {
        self.http
            .get(format!("{}/api/v1/runs/{run}/report", self.base))
            .send()
            .await
            .expect("report")
            .json()
            .await
            .expect("report body")
    }

    /// Polls until the run completes; `logs` is named if it does not.
    pub async fn wait_completed(&self, run: RunId, timeout: Duration, logs: &str) -> RunStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_status(run).await {
                if s.status == "completed" {
                    return s;
                }
                assert!(
                    start.elapsed() < timeout,
                    "run {run} not completed after {timeout:?}: {s:?}; logs in {logs}"
                );
            }
            assert!(
                start.elapsed() < timeout,
                "run {run}: coordinator not answering after {timeout:?}; logs in {logs}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
