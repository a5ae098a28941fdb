//! A real Prometheus (the Debian package `make deps` installs) started by a
//! test with the shipped `deploy/prometheus/prometheus.yml` and alert rules,
//! scraping the given targets every second, and a small client for its
//! query API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Command;

use crate::procs::{free_port, repo_root, Proc};

pub struct Prometheus {
    pub url: String,
    _proc: Proc,
    http: reqwest::Client,
}

/// The `prometheus` binary, or a panic that says how to get it.
pub fn binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("prometheus");
        if p.exists() {
            return p;
        }
    }
    panic!("prometheus is not installed: run `make deps` (Debian package `prometheus`)");
}

impl Prometheus {
    /// Starts Prometheus in `dir` with the shipped configuration, its
    /// intervals cut to 1 s, scraping the coordinator at `coordinator`
    /// (`host:port`) and `agents` (name, `host:port`) through file_sd.
    pub async fn start(dir: &Path, coordinator: &str, agents: &[(String, String)]) -> Prometheus {
        let deploy = repo_root().join("deploy/prometheus");
        std::fs::create_dir_all(dir.join("targets")).unwrap();
        let config = std::fs::read_to_string(deploy.join("prometheus.yml")).unwrap();
        let config = config
            .lines()
            .map(|l| {
                let key = l.trim_start();
                let fast = [
                    "scrape_interval:",
                    "scrape_timeout:",
                    "evaluation_interval:",
                ];
                if fast.iter().any(|k| key.starts_with(k)) {
                    let indent = &l[..l.len() - key.len()];
                    let name = key.split(':').next().unwrap();
                    format!("{indent}{name}: 1s")
                } else {
                    l.replace("127.0.0.1:8080", coordinator)
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        for entry in std::fs::read_dir(&deploy).unwrap().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".yml") && name != "prometheus.yml" {
                std::fs::copy(entry.path(), dir.join(&*name)).unwrap();
            }
        }
        let sd: Vec<Value> = agents
            .iter()
            .map(|(name, addr)| serde_json::json!({ "targets": [addr], "labels": { "agent": name } }))
            .collect();
        std::fs::write(
            dir.join("targets/agents.json"),
            Value::Array(sd).to_string(),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new(binary());
        cmd.current_dir(dir)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let proc = Proc::spawn("prometheus", cmd, &dir.join("prometheus.log"));
        let p = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            _proc: proc,
            http: reqwest::Client::new(),
        };
        let start = Instant::now();
        while p.get("/-/ready").await.is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "prometheus not ready; see {}/prometheus.log",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p
    }

    async fn get(&self, path: &str) -> Option<String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())?;
        resp.text().await.ok()
    }

    /// The result vector of an instant query (`Err` with Prometheus's
    /// message when the query is invalid).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let resp = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body["error"].as_str().unwrap_or("query failed").to_owned());
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every scrape target with its health (`up`, `down`, `unknown`).
    pub async fn targets(&self) -> Vec<(String, String)> {
        let Some(text) = self.get("/api/v1/targets").await else {
            return Vec::new();
        };
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        body["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["scrapeUrl"].as_str().unwrap_or_default().to_owned(),
                    t["health"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}
