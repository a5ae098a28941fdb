//! The deployment files in `deploy/` (issue 7), checked with the real tools:
//! `promtool` (Debian package `prometheus`, installed by `make deps`) for the
//! scrape configuration, the alert rules and their unit tests, and every
//! dashboard query; `docker compose config` (or v1 `docker-compose config`)
//! for the compose file; `systemd-analyze verify` for the units. Every
//! metric an alert or a panel names must be one the coordinator or an agent
//! registers, read from their sources (nothing is started).
//!
//! A missing tool fails these tests, saying to run `make deps`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Series Prometheus itself makes for every target.
const PROMETHEUS_SERIES: &[&str] = &["up"];

const DASHBOARDS: &[&str] = &["fleet-health", "learning", "leases-queue", "ingestion"];

/// The alerts issue 7 asks for, by what they watch.
const REQUIRED_ALERTS: &[&str] = &[
    "FleetFixRateDropping",
    "FleetRegressionRatioBelowOne",
    "FleetAgentDown",
    "FleetQueueNotDraining",
    "FleetIngestLagHigh",
    "FleetStaleCompletionsRising",
    "FleetEventsQuarantined",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `program args…` runs; else the test fails saying how to get it.
fn tool(program: &str, probe: &[&str], install: &str) -> bool {
    match Command::new(program).args(probe).output() {
        Ok(out) if out.status.success() => true,
        other => {
            let why = match other {
                Ok(out) => format!("`{program} {}` failed: {}", probe.join(" "), text(&out)),
                Err(e) => format!("cannot run {program}: {e}"),
            };
            // Never a silent skip: `make test` runs `make deps` first.
            panic!("{why}\n{program} is required: run `make deps` ({install})");
        }
    }
}

fn promtool() -> bool {
    tool(
        "promtool",
        &["--version"],
        "installs the Debian package prometheus, which has promtool",
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let t = text(&out);
    assert!(out.status.success(), "{cmd:?} failed:\n{t}");
    t
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fleet-deploy-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------- prometheus ---

#[test]
fn promtool_accepts_the_scrape_configs_with_their_rules_and_targets() {
    if !promtool() {
        return;
    }
    for config in ["prometheus/prometheus.yml", "prometheus/compose.yml"] {
        let out = run_ok(
            Command::new("promtool")
                .arg("check")
                .arg("config")
                .arg(deploy(config)),
        );
        assert!(out.contains("1 rule files found"), "{config}: {out}");
    }
    let config = read(&deploy("prometheus/prometheus.yml"));
    for needle in [
        "127.0.0.1:8080",
        "file_sd_configs",
        "targets/*.json",
        "alerts.yml",
    ] {
        assert!(config.contains(needle), "prometheus.yml lacks {needle}");
    }

    // The file_sd format `make fleet` and operators write, as documented by
    // the example: promtool reads the target files the glob matches.
    let tmp = TempDir::new("sd");
    std::fs::create_dir_all(tmp.0.join("targets")).unwrap();
    for f in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(deploy(&format!("prometheus/{f}")), tmp.0.join(f)).unwrap();
    }
    std::fs::copy(
        deploy("prometheus/targets/agents.json.example"),
        tmp.0.join("targets/agents.json"),
    )
    .unwrap();
    run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(tmp.0.join("prometheus.yml")),
    );
    // ...and would refuse a malformed one (the check is real).
    std::fs::write(tmp.0.join("targets/bad.json"), r#"[{"targets": "x"}]"#).unwrap();
    let out = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(tmp.0.join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a malformed SD file passed:\n{}",
        text(&out)
    );
}

#[test]
fn promtool_accepts_the_alert_rules() {
    if !promtool() {
        return;
    }
    let out = run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(deploy("prometheus/alerts.yml")),
    );
    let alerts = alert_names();
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{out}"
    );
    for a in REQUIRED_ALERTS {
        assert!(alerts.contains(*a), "alerts.yml lacks {a}");
    }
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    // Coverage, from the test file's text: each alert has a case with
    // `exp_alerts: []` and one with expected alerts.
    let tests = read(&deploy("prometheus/alerts_test.yml"));
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts after an alertname");
            let entry = cases.entry(name).or_default();
            if rest.trim() == "[]" {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
    }
    for alert in alert_names() {
        let (fires, quiet) = cases.get(&alert).copied().unwrap_or_default();
        assert!(fires, "alerts_test.yml never expects {alert} to fire");
        assert!(quiet, "alerts_test.yml never expects {alert} to stay quiet");
    }

    if !promtool() {
        return;
    }
    let out = run_ok(
        Command::new("promtool")
            .arg("test")
            .arg("rules")
            .arg(deploy("prometheus/alerts_test.yml")),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `- alert: Name` lines of alerts.yml.
fn alert_names() -> BTreeSet<String> {
    read(&deploy("prometheus/alerts.yml"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// Every `expr:` of a YAML file, block scalars (`expr: |`) included.
fn yaml_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        if let Some(value) = line.trim().strip_prefix("expr:") {
            let value = value.trim();
            if value == "|" || value == ">" {
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                exprs.push(block.join("\n"));
            } else {
                exprs.push(value.trim_matches('\'').trim_matches('"').to_owned());
            }
        }
        i += 1;
    }
    exprs
}

// ---------------------------------------------------------------- grafana ---

struct Panel {
    dashboard: String,
    title: String,
    exprs: Vec<String>,
}

/// Every panel of every dashboard, after checking each one's shape.
fn dashboard_panels() -> Vec<Panel> {
    let dir = deploy("grafana/dashboards");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    found.sort();
    let mut want: Vec<String> = DASHBOARDS.iter().map(|d| format!("{d}.json")).collect();
    want.sort();
    assert_eq!(found, want, "dashboards in {}", dir.display());

    let mut uids = BTreeSet::new();
    let mut panels = Vec::new();
    for file in &found {
        let json: Value = serde_json::from_str(&read(&dir.join(file)))
            .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        let uid = json["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} used twice");
        assert!(
            json["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: no title"
        );
        let list = json["panels"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: no panels"));
        assert!(!list.is_empty(), "{file}: no panels");
        let mut ids = BTreeSet::new();
        for p in flatten(list) {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let at = format!("{file} panel {title:?}");
            assert!(!title.is_empty(), "{file}: a panel has no title");
            assert!(
                ids.insert(p["id"].as_i64().unwrap_or_else(|| panic!("{at}: no id"))),
                "{at}: id used twice"
            );
            assert_eq!(p["datasource"]["uid"], "prometheus", "{at}: datasource");
            assert_eq!(p["datasource"]["type"], "prometheus", "{at}: datasource");
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{at}: no targets"));
            assert!(!targets.is_empty(), "{at}: no targets");
            let mut exprs = Vec::new();
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "prometheus",
                    "{at}: target datasource"
                );
                let expr = t["expr"].as_str().unwrap_or_default().trim();
                assert!(!expr.is_empty(), "{at}: a target has no expr");
                // The lead's fleet test runs these verbatim against Prometheus.
                assert!(
                    !expr.contains('$'),
                    "{at}: {expr:?} uses a Grafana variable"
                );
                exprs.push(expr.to_owned());
            }
            panels.push(Panel {
                dashboard: file.clone(),
                title,
                exprs,
            });
        }
    }
    panels
}

/// Panels, with the panels of collapsed rows.
fn flatten(list: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in list {
        if p["type"] == "row" {
            if let Some(inner) = p["panels"].as_array() {
                out.extend(flatten(inner));
            }
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn dashboards_parse_and_every_panel_queries_prometheus_with_valid_promql() {
    let panels = dashboard_panels();
    assert!(panels.len() >= 4 * 4, "only {} panels", panels.len());
    if !promtool() {
        return;
    }
    // promtool parses each query as PromQL: one recording rule per query.
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    let mut n = 0;
    for p in &panels {
        for e in &p.exprs {
            n += 1;
            rules.push_str(&format!(
                "      # {} / {}\n      - record: dashboard:query_{n}\n        expr: {}\n",
                p.dashboard,
                p.title,
                serde_json::to_string(e).unwrap()
            ));
        }
    }
    let tmp = TempDir::new("dash");
    let file = tmp.0.join("dashboard-queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&file),
    );
    assert!(
        out.contains(&format!("SUCCESS: {n} rules found")),
        "{out}\n{rules}"
    );
}

#[test]
fn grafana_provisioning_serves_the_dashboards_from_the_prometheus_datasource() {
    let ds = read(&deploy("grafana/provisioning/datasources/prometheus.yml"));
    assert!(ds.contains("uid: prometheus"), "{ds}");
    assert!(ds.contains("type: prometheus"), "{ds}");
    assert!(ds.contains("url: $FLEET_PROMETHEUS_URL"), "{ds}");
    let dash = read(&deploy("grafana/provisioning/dashboards/fleet.yml"));
    assert!(dash.contains("type: file"), "{dash}");
    let path = dash
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .expect("a dashboards path")
        .trim()
        .to_owned();
    // Compose mounts the dashboards where the provider looks.
    let compose = read(&deploy("docker-compose.yml"));
    assert!(
        compose.contains(&format!("./grafana/dashboards:{path}:ro")),
        "docker-compose.yml does not mount the dashboards at {path}"
    );
    assert!(compose.contains("./grafana/provisioning:/etc/grafana/provisioning:ro"));
    assert!(compose.contains("FLEET_PROMETHEUS_URL: http://prometheus:9090"));
}

// ---------------------------------------------------------------- metrics ---

/// Metric names the sources register: the `"fleet_…"` literals of the
/// coordinator's and the agent's metrics modules, outside their tests.
fn registered_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for src in ["coordinator/src/metrics.rs", "agent/src/metrics/mod.rs"] {
        let text = read(&root().join(src));
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for piece in code.split("\"fleet_").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if piece[name.len()..].starts_with('"') {
                names.insert(format!("fleet_{name}"));
            }
        }
    }
    assert!(names.len() > 20, "found only {names:?}");
    names
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
];
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric names in a PromQL expression: identifiers that are not functions,
/// aggregations, keywords, label names (in `{…}`, `by (…)`, …), ranges or
/// numbers.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Index just past the bracket closing the one at `open` (strings skipped).
    let close = |open: usize, o: char, c: char| -> usize {
        let mut depth = 0;
        let mut j = open;
        while j < chars.len() {
            match chars[j] {
                q @ ('"' | '\'' | '`') => {
                    j += 1;
                    while j < chars.len() && chars[j] != q {
                        if chars[j] == '\\' {
                            j += 1;
                        }
                        j += 1;
                    }
                }
                x if x == o => depth += 1,
                x if x == c => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        panic!("unbalanced {o} in {expr:?}");
    };
    while i < chars.len() {
        let ch = chars[i];
        if ch == '{' {
            i = close(i, '{', '}');
        } else if ch == '[' {
            i = close(i, '[', ']');
        } else if ch == '"' || ch == '\'' || ch == '`' {
            i = close(i, ch, ch); // never nested: ends at the next quote
        } else if ch.is_ascii_digit() || ch == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut k = i;
            while k < chars.len() && chars[k].is_whitespace() {
                k += 1;
            }
            let call = k < chars.len() && chars[k] == '(';
            if LABEL_LISTS.contains(&word.as_str()) && call {
                i = close(k, '(', ')');
            } else if call
                || AGGREGATIONS.contains(&word.as_str())
                || KEYWORDS.contains(&word.as_str())
            {
                // a function, an aggregation or an operator
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn promql_metric_names_skips_functions_labels_and_ranges() {
    let got = promql_metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(fleet_ingest_lag_seconds_bucket{job="x",le!="+Inf"}[5m]))) > 5
           and on() (sum(rate(fleet_events_ingested_total[5m] offset 1h)) or vector(0)) == 0
           unless up{job="a b"} * 60"#,
    );
    let want: BTreeSet<String> = [
        "fleet_ingest_lag_seconds_bucket",
        "fleet_events_ingested_total",
        "up",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
}

#[test]
fn every_metric_in_alerts_and_dashboards_is_registered_by_the_coordinator_or_an_agent() {
    let registered = registered_metrics();
    let known = |name: &str| -> bool {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        [name, base]
            .iter()
            .any(|n| registered.contains(*n) || PROMETHEUS_SERIES.contains(n))
    };
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let alerts = read(&deploy("prometheus/alerts.yml"));
    let alert_exprs = yaml_exprs(&alerts);
    assert_eq!(alert_exprs.len(), alert_names().len(), "one expr per alert");
    for e in &alert_exprs {
        for m in promql_metric_names(e) {
            used.entry(m).or_default().insert("alerts.yml".into());
        }
    }
    for p in dashboard_panels() {
        for e in &p.exprs {
            for m in promql_metric_names(e) {
                used.entry(m)
                    .or_default()
                    .insert(format!("{} / {}", p.dashboard, p.title));
            }
        }
    }
    let unknown: Vec<String> = used
        .iter()
        .filter(|(m, _)| !known(m))
        .map(|(m, w)| format!("{m} (in {w:?})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics no source registers: {unknown:#?}\nregistered: {registered:?}"
    );
    for m in [
        "fleet_run_fix_rate",
        "fleet_run_first_try_rate",
        "fleet_run_regression_ratio",
        "fleet_queue_depth",
        "fleet_ingest_lag_seconds_bucket",
        "fleet_events_quarantined_total",
        "fleet_promotions_total",
    ] {
        assert!(used.contains_key(m), "nothing shows {m}");
    }
}

// ----------------------------------------------------- compose and systemd ---

/// `docker compose` (v2) if it answers, else `docker-compose` (v1).
fn compose() -> Option<Vec<&'static str>> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        return Some(vec!["docker", "compose"]);
    }
    tool(
        "docker-compose",
        &["version"],
        "installs the Debian package docker-compose",
    )
    .then(|| vec!["docker-compose"])
}

#[test]
fn the_compose_file_is_valid_and_wants_its_secrets() {
    let Some(cmd) = compose() else { return };
    let file = deploy("docker-compose.yml");
    let config = |secrets: bool| {
        let mut c = Command::new(cmd[0]);
        c.args(&cmd[1..])
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"]);
        c.current_dir(deploy(""));
        for v in ["FLEET_API_TOKEN", "FLEET_AGENT_TOKEN", "FLEET_GIT_SECRET"] {
            if secrets {
                c.env(v, "test-secret");
            } else {
                c.env_remove(v);
            }
        }
        c.output().unwrap()
    };
    let out = config(true);
    assert!(out.status.success(), "{cmd:?} config -q:\n{}", text(&out));
    let out = config(false);
    assert!(
        !out.status.success(),
        "the compose file runs without tokens"
    );
    assert!(text(&out).contains("FLEET_API_TOKEN"), "{}", text(&out));

    let compose = read(&file);
    for service in [
        "redis:",
        "postgres:",
        "prometheus:",
        "grafana:",
        "coordinator:",
        "agent:",
    ] {
        assert!(
            compose.contains(&format!("\n  {service}\n")),
            "no service {service}"
        );
    }
    assert!(deploy("Dockerfile").is_file());
}

#[test]
fn systemd_units_verify_and_the_agent_joins_with_a_url_and_a_token() {
    let agent = read(&deploy("systemd/fleet-agent.service"));
    for needle in [
        "EnvironmentFile=/etc/fleet/agent.env",
        "ExecStart=/usr/local/bin/fleet-agent\n",
        "SupplementaryGroups=docker",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "StateDirectory=fleet-agent",
    ] {
        assert!(agent.contains(needle), "fleet-agent.service lacks {needle}");
    }
    let env = read(&deploy("systemd/agent.env.example"));
    let set: Vec<&str> = env
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().trim())
        .collect();
    assert_eq!(
        set,
        ["FLEET_COORDINATOR_URL", "FLEET_AGENT_TOKEN"],
        "agent.env.example"
    );
    let coordinator = read(&deploy("systemd/fleet-coordinator.service"));
    assert!(coordinator.contains("EnvironmentFile=/etc/fleet/coordinator.env"));
    assert!(coordinator.contains("ExecStart=/usr/local/bin/fleet-coordinator serve"));

    // systemd's own parser (Debian's `systemd` package; never skipped).
    // The binaries are not installed here, which is the one complaint
    // allowed.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(deploy("systemd/fleet-agent.service"))
        .arg(deploy("systemd/fleet-coordinator.service"))
        .output()
        .expect("systemd-analyze is required: install the Debian package systemd");
    let complaints: Vec<String> = text(&out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("/usr/local/bin/fleet-") || !l.contains("is not executable"))
        .map(String::from)
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify:\n{}",
        complaints.join("\n")
    );
}
