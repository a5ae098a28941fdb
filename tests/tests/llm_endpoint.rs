//! The LLM endpoint as the agent sees it (issue 20): the start check that
//! refuses a wrong URL, key or model before anything is leased, and the
//! hold when the endpoint goes down mid-run: the lease is handed back (no
//! outcome, no lease loss), the agent stops leasing and probes `/models`
//! until the endpoint answers, then finishes every rule without a single
//! `llm_unavailable`.

use std::sync::Arc;
use std::time::Duration;

use fleet_agent::events::EventSink;
use fleet_agent::llm::{ChatClient, LlmSettings, ModelsProbe, OpenAiBrain};
use fleet_agent::metrics::AgentMetrics;
use fleet_agent::runner::{LlmHold, Runner};
use fleet_agent::sim::{behaviour, script_for, SimBehaviour, SimEvaluator, SimMachine, SimTarget};
use fleet_agent::workbench::Workbench;
use fleet_common::api::RuleOutcome;
use fleet_common::lease::QueuedTask;
use fleet_common::settings::LeaseSettings;
use fleet_common::{Budgets, EscalationReason, EventBody, Outcome};
use fleet_tests::fake_llm::{FakeLlm, Reply, MODEL};
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::procs::{bin, free_port};
use fleet_tests::queue::{agent, queued, TestQueue};
use fleet_tests::services::{redis_url, unique};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const REFLECTOR: &str = "Answer with JSON only";

/// Polls `cond` until it holds; panics with `what` after `within` (a
/// guard against a hang, not a measurement).
async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < give_up, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod start_check {
    use super::*;

    /// Runs the agent binary on Docker targets with the `openai` brain on
    /// `url` with `extra` flags; (exit code, stderr, keys it left in Redis).
    async fn agent_with(url: &str, extra: &[&str]) -> (Option<i32>, String, usize) {
        let prefix = format!("{}:", unique("llm-start"));
        let mut child = tokio::process::Command::new(bin("fleet-agent"))
            .args(["--id", "agent-start", "--redis-url", &redis_url()])
            .args(["--key-prefix", &prefix])
            .args(["--brain", "openai", "--target", "docker"])
            .args(["--llm-url", url])
            .args(extra)
            .env_remove("FLEET_COORDINATOR_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("fleet-agent starts");
        let stderr = child.stderr.take().unwrap();
        let read = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut text = String::new();
            let mut stderr = stderr;
            stderr.read_to_string(&mut text).await.unwrap();
            text
        });
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("the agent exits by itself")
            .unwrap();
        let stderr = read.await.unwrap();
        let mut conn = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        (status.code(), stderr, keys.len())
    }

    /// The line the agent died with (anyhow's `Error: …`).
    fn error_line(stderr: &str) -> &str {
        stderr
            .lines()
            .find(|l| l.starts_with("Error: "))
            .unwrap_or_else(|| panic!("no error line in: {stderr}"))
    }

    #[tokio::test]
    async fn a_wrong_model_stops_the_agent_at_start_naming_the_models_served() {
        let llm = FakeLlm::start().await;
        llm.serve_models(&["qwen2.5-coder:7b", "llama3:latest"]);
        let (code, stderr, keys) = agent_with(&llm.base_url, &["--llm-model", "gpt-4o"]).await;
        assert_eq!(code, Some(1), "{stderr}");
        let line = error_line(&stderr);
        assert!(
            line.contains("does not serve model \"gpt-4o\"")
                && line.contains("it serves: qwen2.5-coder:7b, llama3:latest")
                && line.contains("--llm-model"),
            "{line}"
        );
        assert_eq!(keys, 0, "nothing touched in Redis before the check");
        assert_eq!(llm.model_requests(), 1, "a wrong model is not asked again");
        assert_eq!(llm.requests(), 0, "no chat request");
    }

    #[tokio::test]
    async fn a_refused_key_stops_the_agent_at_start() {
        let llm = FakeLlm::start().await;
        llm.require_key("sk-right");
        let (code, stderr, keys) = agent_with(
            &llm.base_url,
            &["--llm-model", MODEL, "--llm-api-key", "sk-wrong"],
        )
        .await;
        assert_eq!(code, Some(1), "{stderr}");
        let line = error_line(&stderr);
        assert!(
            line.contains("refused the API key (401)") && line.contains("--llm-api-key"),
            "{line}"
        );
        assert!(!stderr.contains("sk-wrong"), "the key is never shown");
        assert_eq!(keys, 0);
    }

    #[tokio::test]
    async fn a_url_without_the_api_or_nobody_listening_stops_the_agent_at_start() {
        let llm = FakeLlm::start().await;
        // The base without `/v1`: GET /models is a 404.
        let bare = llm.base_url.trim_end_matches("/v1").to_owned();
        let (code, stderr, _) = agent_with(&bare, &["--llm-model", MODEL]).await;
        assert_eq!(code, Some(1), "{stderr}");
        let line = error_line(&stderr);
        assert!(
            line.contains("no OpenAI-compatible API at") && line.contains("up to /v1"),
            "{line}"
        );

        // Nothing listens: asked again for --llm-start-wait-s, then refused.
        let nobody = format!("http://127.0.0.1:{}/v1", free_port());
        let (code, stderr, keys) =
            agent_with(&nobody, &["--llm-model", MODEL, "--llm-start-wait-s", "1"]).await;
        assert_eq!(code, Some(1), "{stderr}");
        let line = error_line(&stderr);
        assert!(
            line.contains("is unreachable") && line.contains("--llm-url"),
            "{line}"
        );
        assert!(
            stderr.contains("LLM endpoint not ready at start; asking again"),
            "retried before giving up: {stderr}"
        );
        assert_eq!(keys, 0);
    }
}

/// The agent's runner in-process on the simulated target, with the
/// `openai` brain on the fake endpoint and a real Redis queue.
mod hold_in_process {
    use super::*;

    fn rule_that(wanted: SimBehaviour, tag: &str) -> String {
        (0..)
            .map(|i| format!("hold_{tag}_{i}"))
            .find(|r| behaviour(r) == wanted)
            .unwrap()
    }

    fn task(id: i64, rule: &str) -> QueuedTask {
        let mut t = queued(1, id, rule, 3);
        t.task.budgets = Budgets {
            max_attempts: 2,
            wall_time_s: 120,
        };
        t
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_endpoint_that_goes_down_holds_the_work_and_nothing_escalates() {
        let fixable = rule_that(SimBehaviour::FixedOnAttempt(1), "fix");
        let hopeless = rule_that(SimBehaviour::NeverFixable, "never");
        let other = rule_that(SimBehaviour::FixedOnAttempt(1), "other");
        let llm = FakeLlm::start().await;
        llm.on(REFLECTOR, vec![Reply::lesson("Try harder.", None, "rule")])
            .on(&fixable, vec![Reply::script(&script_for(&fixable, 1))])
            .on(&other, vec![Reply::script(&script_for(&other, 1))])
            .otherwise(Reply::script("echo 'changed nothing'"));

        let queue = TestQueue::new(LeaseSettings::default()).await;
        queue.client.set_generation(1).await.unwrap();
        let tasks = [task(1, &fixable), task(2, &hopeless), task(3, &other)];
        queue.client.enqueue(&tasks).await.unwrap();

        let settings = LlmSettings {
            base_url: llm.base_url.clone(),
            model: MODEL.into(),
            timeout: Duration::from_secs(5),
            retries: 1,
            ..LlmSettings::default()
        };
        let machine = SimMachine::default();
        let bench = Workbench {
            brain: Arc::new(OpenAiBrain {
                client: ChatClient::new(settings.clone()).unwrap(),
            }),
            target: Arc::new(SimTarget {
                machine: machine.clone(),
                work: Duration::from_millis(2),
            }),
            evaluator: Arc::new(SimEvaluator {
                machine,
                work: Duration::from_millis(2),
            }),
        };
        let metrics = AgentMetrics::new();
        let shutdown = CancellationToken::new();
        let hold = LlmHold::new(
            ModelsProbe::new(&settings).unwrap(),
            Duration::from_secs(1),
            metrics.clone(),
            shutdown.clone(),
        );
        let sink = EventSink::start(
            queue.client.clone(),
            agent("agent-hold"),
            1,
            metrics.clone(),
        );
        // Down before the first lease asks the brain.
        llm.set_down(true);
        let runner = Runner::new(
            queue.client.clone(),
            sink.clone(),
            metrics.clone(),
            Some(3),
            shutdown.clone(),
        )
        .with_llm_hold(Some(hold));
        let running = tokio::spawn(runner.run(vec![bench]));

        // The hold: the lease went back, the endpoint is being probed.
        let (q, m, l) = (&queue, &metrics, &llm);
        wait_until(
            "the agent holds with its lease handed back",
            Duration::from_secs(30),
            || async move {
                let depth = q.client.queue_depth().await.unwrap();
                m.llm().available.get() == 0
                    && q.stat("released").await == 1
                    && (depth.ready, depth.leased) == (3, 0)
                    && l.model_requests() > 0
            },
        )
        .await;
        assert_eq!(metrics.llm().holds.get(), 1);
        for t in &tasks {
            assert_eq!(
                queue.task_field(t.task.task, "state").await.as_deref(),
                Some("queued")
            );
        }

        llm.set_down(false);
        let summary = tokio::time::timeout(Duration::from_secs(60), running)
            .await
            .expect("the agent finishes once the endpoint is back")
            .unwrap();
        sink.close(Duration::from_secs(5)).await;
        assert_eq!(summary.completed, 3);
        assert_eq!(metrics.llm().available.get(), 1);
        assert_eq!(metrics.llm().holds.get(), 1, "one outage, one hold");

        let stream = queue.stream().await;
        let bodies: Vec<&EventBody> = stream.iter().map(|(e, _)| &e.body).collect();
        let count = |f: fn(&EventBody) -> bool| bodies.iter().filter(|b| f(b)).count();
        // One lease handed back during the hold, then one per task: the
        // agent did not lease while the endpoint was down.
        assert_eq!(count(|b| matches!(b, EventBody::LeaseAcquired { .. })), 4);
        assert_eq!(count(|b| matches!(b, EventBody::LeaseReleased)), 1);
        assert_eq!(count(|b| matches!(b, EventBody::LeaseReclaimed { .. })), 0);
        assert_eq!(count(|b| matches!(b, EventBody::LeaseAbandoned { .. })), 0);
        let outcomes: Vec<(String, Outcome)> = stream
            .iter()
            .filter_map(|(e, _)| match e.body {
                EventBody::TaskCompleted { outcome, .. } => Some((e.rule.clone(), outcome)),
                _ => None,
            })
            .collect();
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
        for (rule, outcome) in &outcomes {
            let wanted = if *rule == hopeless {
                Outcome::Escalated {
                    reason: EscalationReason::AttemptBudget,
                }
            } else {
                Outcome::Fixed { attempt: 1 }
            };
            assert_eq!(*outcome, wanted, "{rule}");
        }
        for t in &tasks {
            let losses = queue.task_field(t.task.task, "losses").await;
            assert_eq!(losses.as_deref(), Some("0"), "no lease loss counted");
        }
        assert_eq!(queue.stat("reclaimed").await, 0);
    }
}

/// Real binaries: the coordinator plans three rules of the Debian 11
/// profile, one agent on its Docker target asks the fake endpoint, which
/// goes down after its first answer and comes back once the agent holds.
mod hold_end_to_end {
    use super::*;

    const PACK: &str = "ssg-debian11-standard";
    const RULES: [&str; 3] = [
        "package_cron_installed",
        "package_rsyslog_installed",
        "package_audit_installed",
    ];

    /// The value of an unlabelled sample `name` on agent i's `/metrics`.
    async fn agent_metric(fleet: &Fleet, i: usize, name: &str) -> Option<f64> {
        let url = format!("http://{}/metrics", fleet.agent_metrics[i]);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_endpoint_that_goes_away_mid_run_is_waited_for_and_no_rule_escalates_for_it() {
        let llm = FakeLlm::start().await;
        llm.on(REFLECTOR, vec![Reply::lesson("Use apt-get.", None, "rule")])
            .on(
                "package_cron_installed",
                vec![Reply::script("apt-get install -y -q cron")],
            )
            .otherwise(Reply::script("echo 'looked around, changed nothing'"))
            .go_down_after(1);
        let mut opts = FleetOpts::llm(&llm.base_url);
        opts.auto_dream = false;
        opts.agent_env = vec![
            ("FLEET_LLM_RETRIES".into(), "1".into()),
            ("FLEET_LLM_PROBE_MAX_S".into(), "1".into()),
        ];
        let fleet = Fleet::start(opts).await;
        let budgets = Budgets {
            max_attempts: 2,
            wall_time_s: 300,
        };
        let rules = RULES.iter().map(|r| (*r).to_owned()).collect();
        let run = fleet.submit_with(PACK, rules, budgets).await;
        assert_eq!(run.tasks, 3, "every rule fails on the baseline");

        // The outage: the agent hands its lease back and holds; every task
        // waits in the queue, none with an outcome.
        let f = &fleet;
        wait_until("the agent holds", Duration::from_secs(300), || async move {
            let depth = f.leases.queue_depth().await.unwrap();
            agent_metric(f, 0, "fleet_agent_llm_available").await == Some(0.0) && depth.leased == 0
        })
        .await;
        assert_eq!(
            agent_metric(&fleet, 0, "fleet_agent_llm_holds_total").await,
            Some(1.0)
        );
        let escalated: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM work_items WHERE run_id = $1 AND outcome = 'escalated'",
        )
        .bind(run.run.0)
        .fetch_one(&fleet.db.pool)
        .await
        .unwrap();
        assert_eq!(escalated, 0, "nothing escalates while the endpoint is down");

        llm.set_down(false);
        fleet
            .wait_completed(run.run, Duration::from_secs(600))
            .await;
        let report = fleet.report(run.run).await;
        for rule in RULES {
            let row = report.rule(rule).expect("in the report");
            assert!(
                row.attempts.is_some_and(|a| a >= 1),
                "{rule} attempted: {row:?}"
            );
            assert_ne!(
                row.reason.as_deref(),
                Some("llm_unavailable"),
                "{rule}: {row:?}"
            );
        }
        let cron = report.rule("package_cron_installed").unwrap();
        assert_eq!(cron.outcome, RuleOutcome::Fixed);
        for rule in ["package_rsyslog_installed", "package_audit_installed"] {
            let row = report.rule(rule).unwrap();
            assert_eq!(
                (row.outcome, row.reason.as_deref()),
                (RuleOutcome::Escalated, Some("attempt_budget")),
                "{rule}"
            );
        }
        fleet.wait_ingested(Duration::from_secs(30)).await;
        let kinds: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, count(*) FROM run_events WHERE run_id = $1
             AND kind IN ('lease_released', 'lease_reclaimed', 'lease_abandoned') GROUP BY kind",
        )
        .bind(run.run.0)
        .fetch_all(&fleet.db.pool)
        .await
        .unwrap();
        assert_eq!(
            kinds,
            vec![("lease_released".to_owned(), 1)],
            "handed back once, never lost"
        );
        assert_eq!(
            agent_metric(&fleet, 0, "fleet_agent_llm_available").await,
            Some(1.0)
        );
        assert!(llm.refused_while_down() > 0);
        fleet.shutdown().await;
    }
}
