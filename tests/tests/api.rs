//! The HTTP API in-process on a real port, Redis and Postgres: bad
//! submissions get a 4xx whose message says what is wrong.

use fleet_common::api::{AgentConfig, ApiError};
use fleet_common::settings::LeaseSettings;
use fleet_coordinator::api::{router, AppState};
use fleet_tests::coord::TestCoordinator;
use fleet_tests::services::redis_url;
use reqwest::StatusCode;
use serde_json::json;

struct Api {
    base: String,
    http: reqwest::Client,
    _c: TestCoordinator,
}

async fn start() -> Api {
    start_with(None).await
}

/// With `scan_image`, the planner scans it before planning.
async fn start_with(scan_image: Option<String>) -> Api {
    let c = TestCoordinator::new(LeaseSettings::default()).await;
    let state = AppState {
        pool: c.db.pool.clone(),
        leases: c.queue.client.clone(),
        packs: c.packs.clone().with_baseline_scan(scan_image),
        metrics: c.metrics.clone(),
        api_token: "api-secret".into(),
        agent_token: "agent-secret".into(),
        agent_config: AgentConfig {
            redis_url: redis_url(),
            key_prefix: c.queue.keys.prefix().to_owned(),
            lease: LeaseSettings::default(),
            knowledge_url: None,
            git_password: None,
            incarnation: None,
        },
        git_secret: String::new(),
        access: Default::default(),
        dreamer: fleet_coordinator::dream::Dreamer::new(
            c.db.pool.clone(),
            c.packs.clone(),
            std::env::temp_dir().join("fleet-no-knowledge-repo"),
            c.metrics.clone(),
        ),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    Api {
        base,
        http: reqwest::Client::new(),
        _c: c,
    }
}

impl Api {
    async fn submit(&self, token: Option<&str>, body: serde_json::Value) -> (StatusCode, String) {
        let mut req = self
            .http
            .post(format!("{}/api/v1/runs", self.base))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn rejected(&self, body: serde_json::Value) -> String {
        let (status, text) = self.submit(Some("api-secret"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} answered {text}");
        serde_json::from_str::<ApiError>(&text)
            .unwrap_or_else(|_| panic!("not an ApiError: {text}"))
            .error
    }
}

#[tokio::test]
async fn bad_submissions_say_what_is_wrong() {
    let api = start().await;
    let cases = [
        (json!({"skill_pack": "nope", "rules": ["a"]}), "sim-demo"),
        (
            json!({"skill_pack": "../etc", "rules": ["a"]}),
            "skill pack",
        ),
        (json!({"skill_pack": "sim-demo", "rules": []}), "rules"),
        (
            json!({"skill_pack": "sim-demo", "rules": ["a", "b", "a"]}),
            "\"a\"",
        ),
        (
            json!({"skill_pack": "sim-demo", "rules": ["ok", "rm -rf /"]}),
            "rm -rf /",
        ),
        (
            json!({"skill_pack": "sim-demo", "rules": ["a"], "budgets": {"max_attempts": 0}}),
            "max_attempts",
        ),
        (
            json!({"skill_pack": "sim-demo", "rules": ["a"], "budgets": {"wall_time_s": 999999}}),
            "wall_time_s",
        ),
        (
            json!({"skill_pack": "sim-demo", "rules": ["a"], "surprise": true}),
            "surprise",
        ),
        (json!({"skill_pack": "sim-demo"}), "rules"),
        (json!({"skill_pack": "sim-demo", "rules": "a"}), "rules"),
    ];
    for (body, mentions) in cases {
        let msg = api.rejected(body.clone()).await;
        assert!(
            msg.contains(mentions),
            "{body}: message {msg:?} does not mention {mentions:?}"
        );
    }
    let resp = api
        .http
        .post(format!("{}/api/v1/runs", api.base))
        .bearer_auth("api-secret")
        .header("content-type", "application/json")
        .body("{\"skill_pack\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    serde_json::from_str::<ApiError>(&resp.text().await.unwrap())
        .expect("json error body for broken json");
}

#[tokio::test]
async fn a_scap_pack_run_covers_its_profile_and_refuses_foreign_rules() {
    let api = start().await;
    let (status, text) = api
        .submit(
            Some("api-secret"),
            json!({"skill_pack": "ssg-debian11-standard"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let resp: fleet_common::api::SubmitRunResponse = serde_json::from_str(&text).unwrap();
    // What `oscap` selects for this profile (checked in fleet-scap's tests).
    assert_eq!(resp.tasks, 44);
    // Each work item keeps the rule's text for the Worker's prompt, so a
    // rebuilt queue carries it too.
    let (title, severity): (String, String) = sqlx::query_as(
        "SELECT rule_text->>'title', rule_text->>'severity' FROM work_items
         WHERE run_id = $1 AND rule_id = 'package_audit_installed'",
    )
    .bind(resp.run.0)
    .fetch_one(&api._c.db.pool)
    .await
    .unwrap();
    assert!(title.to_lowercase().contains("audit"), "{title}");
    assert!(
        ["low", "medium", "high"].contains(&severity.as_str()),
        "{severity}"
    );

    let msg = api
        .rejected(json!({"skill_pack": "ssg-debian11-standard",
                         "rules": ["package_audit_installed", "no_such_rule"]}))
        .await;
    assert!(
        msg.contains("no_such_rule") && !msg.contains("package_audit_installed"),
        "{msg}"
    );
    let msg = api
        .rejected(json!({"skill_pack": "ssg-debian11-standard", "profile": "xccdf_org.ssgproject.content_profile_nope"}))
        .await;
    assert!(
        msg.contains("profile_standard"),
        "lists the known profiles: {msg}"
    );
}

#[tokio::test]
async fn rules_passing_on_the_target_image_are_recorded_and_never_queued() {
    let image =
        std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into());
    let api = start_with(Some(image)).await;
    let rules = [
        "file_owner_etc_passwd",
        "package_audit_installed",
        "sshd_disable_root_login",
    ];
    let (status, text) = api
        .submit(
            Some("api-secret"),
            json!({"skill_pack": "ssg-debian11-standard", "rules": rules}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{text} (run `make target-image` if the image is missing)"
    );
    let resp: fleet_common::api::SubmitRunResponse = serde_json::from_str(&text).unwrap();
    assert_eq!((resp.tasks, resp.already_passing), (3, 2), "{text}");
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT rule_id, state, outcome FROM work_items WHERE run_id = $1 ORDER BY ordinal",
    )
    .bind(resp.run.0)
    .fetch_all(&api._c.db.pool)
    .await
    .unwrap();
    let want =
        |r: &str, st: &str, o: Option<&str>| (r.to_string(), st.to_string(), o.map(str::to_string));
    assert_eq!(
        rows,
        vec![
            want("file_owner_etc_passwd", "done", Some("already_passing")),
            want("package_audit_installed", "pending", None),
            // No sshd installed: nothing to configure, the check passes.
            want("sshd_disable_root_login", "done", Some("already_passing")),
        ]
    );
    let queue = &api._c.queue.client;
    queue.set_generation(1).await.unwrap();
    let agent = fleet_common::AgentId::parse("a-1").unwrap();
    let queued = queue.lease(&agent).await.unwrap();
    assert_eq!(
        queued.map(|l| l.task.rule).as_deref(),
        Some("package_audit_installed")
    );
    let again = queue.lease(&agent).await.unwrap();
    assert!(again.is_none(), "only the failing rule is queued");
}
