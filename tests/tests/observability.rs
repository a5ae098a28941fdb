//! Metrics end to end: a real Prometheus (Debian package, the shipped
//! `deploy/prometheus` config and alert rules) scrapes a real fleet — the
//! coordinator binary and two agent binaries — through two runs and their
//! dream passes; then every query of every shipped Grafana dashboard must
//! return data, the expositions must pass `promtool check metrics`, and
//! every JSON log line of an agent about a rule must carry its run, agent
//! and epoch.

use std::time::{Duration, Instant};

use fleet_common::api::RunStatus;
use fleet_common::{Budgets, RunId};
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::procs::repo_root;
use fleet_tests::prometheus::Prometheus;
use serde_json::Value;

/// Every `expr` of every panel (rows' nested panels too) of a dashboard.
fn exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_owned()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's variables, as a dashboard would resolve them here.
fn resolve(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m")
        .replace("${__rate_interval}", "1m")
}

/// What `promtool check metrics` says about an exposition (empty: nothing).
fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by `make deps`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_owned()
}

async fn dreamt(fleet: &Fleet, run: RunId) -> RunStatus {
    let start = Instant::now();
    loop {
        let s = fleet.status(run).await;
        if s.dream.as_deref() == Some("done") {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no dream over run {run}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_real_fleet_and_every_dashboard_panel_has_data() {
    let fleet = Fleet::start(FleetOpts {
        json_logs: true,
        ..Default::default()
    })
    .await;
    let agents: Vec<(String, String)> = (0..fleet.opts.agents)
        .map(|i| (Fleet::agent_name(i), fleet.agent_metrics[i].clone()))
        .collect();
    let prom = Prometheus::start(
        &fleet.logs.join("prometheus"),
        fleet.api.trim_start_matches("http://"),
        &agents,
    )
    .await;

    // Two comparable runs: one attempt each, then three, so the second
    // wins rules the first gave up on and the comparison has a ratio.
    let rules: Vec<String> =
        std::fs::read_to_string(repo_root().join("skill-packs/sim-demo/rules.txt"))
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
    for max_attempts in [1, 3] {
        let budgets = Budgets {
            max_attempts,
            ..Budgets::default()
        };
        let run = fleet
            .submit_with("sim-demo", rules.clone(), budgets)
            .await
            .run;
        fleet.wait_completed(run, Duration::from_secs(120)).await;
        let s = dreamt(&fleet, run).await;
        if max_attempts == 3 {
            let c = s.comparison.expect("the first run is comparable");
            assert!(c.wins > 0, "{c:?}");
        }
    }

    // Every target up, and a few scrapes after the last run.
    let start = Instant::now();
    loop {
        let targets = prom.targets().await;
        if targets.len() == 1 + agents.len() && targets.iter().all(|(_, h)| h == "up") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "targets: {targets:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;

    let dir = repo_root().join("deploy/grafana/dashboards");
    let mut checked = 0;
    let mut empty = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let dashboard: Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        for (panel, expr) in exprs(&dashboard) {
            checked += 1;
            match prom.query(&resolve(&expr)).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => empty.push(format!("{name} / {panel}: no data for {expr}")),
                Err(e) => empty.push(format!("{name} / {panel}: {e} in {expr}")),
            }
        }
    }
    assert!(
        checked >= 12,
        "only {checked} panel queries found in {}",
        dir.display()
    );

    // The expositions themselves pass `promtool check metrics` (names,
    // help texts, units, counters ending in _total).
    let mut endpoints = vec![format!("{}/metrics", fleet.api)];
    endpoints.extend(
        fleet
            .agent_metrics
            .iter()
            .map(|a| format!("http://{a}/metrics")),
    );
    for url in endpoints {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let lint = promtool_check_metrics(&text);
        assert!(lint.is_empty(), "promtool check metrics on {url}:\n{lint}");
    }
    assert!(
        empty.is_empty(),
        "{} of {checked} queries without data:\n{}",
        empty.len(),
        empty.join("\n")
    );

    // Logs: every agent line about a rule says which run, agent and epoch.
    let log =
        std::fs::read_to_string(fleet.logs.join(format!("{}.log", Fleet::agent_name(0)))).unwrap();
    let mut about_rules = 0;
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        for span in v["spans"].as_array().into_iter().flatten() {
            keys.extend(span.as_object().unwrap().keys().cloned());
        }
        if keys.iter().any(|k| k == "rule") {
            about_rules += 1;
            for wanted in ["run", "agent", "epoch"] {
                assert!(keys.iter().any(|k| k == wanted), "no {wanted}: {line}");
            }
        }
    }
    assert!(about_rules > 50, "only {about_rules} log lines about rules");
    fleet.shutdown().await;
}
