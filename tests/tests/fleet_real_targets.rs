//! End to end on real parts: the coordinator binary scans the target image
//! and plans the Debian 11 standard profile; two agent binaries, each on its
//! own Docker target from `make target-image`, remediate the rest with the
//! `ssg` brain and OpenSCAP inside the targets; results reach Postgres and
//! the knowledge repo, and the agents leave no container behind.

use std::collections::HashMap;
use std::time::Duration;

use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::hosts::docker::targets_of;

fn image() -> String {
    std::env::var("FLEET_TARGET_IMAGE").unwrap_or_else(|_| "fleet-target:bullseye".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debian11_standard_run_on_docker_targets_accounts_for_every_rule() {
    let mut fleet = Fleet::start(FleetOpts {
        agents: 2,
        target_image: Some(image()),
        auto_bundle_check: true,
        ..Default::default()
    })
    .await;
    let resp = fleet.submit_pack("ssg-debian11-standard", vec![]).await;
    assert_eq!(resp.tasks, 44, "the whole standard profile");
    assert!(
        resp.already_passing > 0 && resp.already_passing < 44,
        "the baseline scan splits the profile: {resp:?}"
    );
    let status = fleet
        .wait_completed(resp.run, Duration::from_secs(600))
        .await;
    assert_eq!(status.finished, 44);
    assert_eq!(status.already_passing, resp.already_passing);

    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT rule_id, outcome, reason, accepted_agent FROM work_items WHERE run_id = $1",
    )
    .bind(resp.run.0)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    let got: HashMap<&str, (&str, Option<&str>, Option<&str>)> = rows
        .iter()
        .map(|(r, o, why, a)| (r.as_str(), (o.as_str(), why.as_deref(), a.as_deref())))
        .collect();
    assert_eq!(got.len(), 44);
    // Passing on the image: the planner recorded it, no agent touched it.
    assert_eq!(
        got["file_owner_etc_passwd"],
        ("already_passing", None, None)
    );
    // Fails in a container, and SSG ships no bash fix for it.
    assert_eq!(got["partition_for_home"].0, "escalated");
    assert_eq!(got["partition_for_home"].1, Some("no_fix_available"));
    assert_eq!(got["package_audit_installed"].1, Some("no_fix_available"));
    // Kernel values and services need a VM (the pack's [[requires]]): on
    // Docker targets alone, those not passing already are never leased.
    assert_eq!(resp.needs_target, status.needs_target);
    assert!(resp.needs_target > 0, "{resp:?}");
    for (rule, (outcome, why, agent)) in &got {
        if rule.starts_with("sysctl_") || rule.starts_with("service_") {
            assert!(
                *outcome == "already_passing"
                    || (*outcome, *why, *agent) == ("needs_target", Some("vm"), None),
                "{rule}: {outcome} {why:?} {agent:?}"
            );
        } else {
            assert_ne!(*outcome, "needs_target", "{rule}");
        }
    }
    // Every leased rule came from one of this fleet's agents.
    let agents: Vec<String> = (0..2).map(|i| fleet.agent_id(i)).collect();
    for (rule, (outcome, _, agent)) in &got {
        if !["already_passing", "needs_target"].contains(outcome) {
            assert!(
                agent.is_some_and(|a| agents.iter().any(|x| x == a)),
                "{rule}: accepted from {agent:?}"
            );
        }
    }

    // After the dream stage, main's bundle is checked on a fresh target
    // by itself (DESIGN H3), as `make fleet` shows.
    let started = std::time::Instant::now();
    let check = loop {
        if let Some(b) = fleet.status(resp.run).await.bundle {
            break b;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no composition check after the dream stage; see {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(check.skills >= 1, "{}", check.line());
    assert!(
        check.pass_after >= check.pass_before + check.skills,
        "{}",
        check.line()
    );
    assert_eq!(
        (check.interference, check.health_failed),
        (0, 0),
        "{}",
        check.line()
    );
    let (ok, line, err) = fleet.cli(&["status", &resp.run.to_string(), "--summary-line"]);
    assert!(ok && line.contains(&check.line()), "{line}{err}");

    for slot in &mut fleet.agents {
        let agent = slot.take().unwrap();
        let name = agent.name.clone();
        let exit = agent.terminate(Duration::from_secs(60)).await;
        assert!(exit.is_some_and(|s| s.success()), "{name}: {exit:?}");
    }
    for a in &agents {
        assert_eq!(targets_of(a), Vec::<String>::new(), "{a} left containers");
    }
    let (checked, missing) = fleet.missing_lease_branches(resp.run).await;
    assert_eq!(
        checked as u64,
        44 - resp.already_passing - resp.needs_target
    );
    assert!(missing.is_empty(), "missing lease branches: {missing:?}");
}
