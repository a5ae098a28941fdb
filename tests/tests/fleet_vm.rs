//! An agent on a qemu VM target end to end (issue 24), with the `openai`
//! brain on the scripted test endpoint:
//! - a kernel rule a container cannot hold is fixed in the VM;
//! - a script that powers the guest off fails its attempt with reason
//!   `health` (the target stopped answering), and the VM is back at its
//!   baseline for the next rule;
//! - the agent SIGKILLed mid-lease: started again, its orphan qemu is gone,
//!   a new VM boots at baseline, and the lease ends once.

use std::time::Duration;

use fleet_common::api::RuleOutcome;
use fleet_common::Budgets;
use fleet_tests::fake_llm::{FakeLlm, Reply};
use fleet_tests::fleet::{Fleet, FleetOpts};
use fleet_tests::services::vm_image_dir;

const PACK: &str = "ssg-debian11-standard";
const ASLR_FIX: &str =
    "echo 'kernel.randomize_va_space = 2' >/etc/sysctl.d/60-fleet.conf && sysctl -q --system";
const DUMPABLE_FIX: &str =
    "echo 'fs.suid_dumpable = 0' >/etc/sysctl.d/60-fleet-dump.conf && sysctl -q --system";

/// Host pids of this agent's qemu processes (not the `nsenter`s that
/// started them).
fn qemu_pids(agent: &str) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("^qemu-system-x86_64 .*guest=fleet-vm-{agent}-"),
        ])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_agent_fixes_kernel_rules_and_outlives_a_poweroff_and_a_sigkill() {
    let llm = FakeLlm::start().await;
    llm.on(
        "sysctl_kernel_randomize_va_space",
        vec![Reply::script(ASLR_FIX)],
    )
    .on(
        "sysctl_fs_suid_dumpable",
        vec![
            // Past the screen (which refuses `poweroff`): the kernel's own way.
            Reply::script("sync; echo o >/proc/sysrq-trigger"),
            Reply::lesson("Never power the machine off.", None, "family"),
            // Run 2: SIGKILLed while this sleeps, then the fix.
            Reply::script("touch /root/fleet-was-here; sleep 120"),
            Reply::script(DUMPABLE_FIX),
        ],
    )
    .otherwise(Reply::lesson("Look at the runtime value.", None, "family"));
    let mut fleet = Fleet::start(FleetOpts {
        agents: 1,
        vm_image: Some(vm_image_dir()),
        ..FleetOpts::llm(&llm.base_url)
    })
    .await;
    let agent = fleet.agent_id(0);
    let budgets = Budgets {
        max_attempts: 1,
        wall_time_s: 600,
    };

    // A kernel rule fixed, and a poweroff that fails its attempt cleanly.
    let run = fleet
        .submit_with(
            PACK,
            vec![
                "sysctl_fs_suid_dumpable".into(),
                "sysctl_kernel_randomize_va_space".into(),
            ],
            budgets,
        )
        .await;
    fleet
        .wait_completed(run.run, Duration::from_secs(600))
        .await;
    let report = fleet.report(run.run).await;
    let aslr = report.rule("sysctl_kernel_randomize_va_space").unwrap();
    assert_eq!(
        (aslr.outcome, aslr.fixed_attempt),
        (RuleOutcome::Fixed, Some(1)),
        "{aslr:?}"
    );
    let dumpable = report.rule("sysctl_fs_suid_dumpable").unwrap();
    assert_eq!(dumpable.outcome, RuleOutcome::Escalated, "{dumpable:?}");
    assert_eq!(dumpable.reason.as_deref(), Some("health"), "{dumpable:?}");
    let health_failed: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(a.health_failed) FROM attempts a JOIN work_items w ON w.id = a.work_item_id
         WHERE w.run_id = $1 AND w.rule_id = 'sysctl_fs_suid_dumpable'",
    )
    .bind(run.run.0)
    .fetch_all(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(health_failed, ["target"], "the guest stopped answering");

    // SIGKILL mid-lease: the script sleeps in the guest.
    let before = qemu_pids(&agent);
    assert_eq!(before.len(), 1, "one VM for one slot: {before:?}");
    let run = fleet
        .submit_with(
            PACK,
            vec!["sysctl_fs_suid_dumpable".into()],
            Budgets {
                max_attempts: 2,
                ..budgets
            },
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    // Run 1 asked twice about this rule (Worker, Reflector); the third
    // request is run 2's Worker, answered with the sleep.
    while llm.requests_mentioning("sysctl_fs_suid_dumpable") < 3 {
        assert!(tokio::time::Instant::now() < deadline, "never leased");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.agents[0].take().expect("agent runs").kill().await;
    fleet.start_agent(0);
    let status = fleet
        .wait_completed(run.run, Duration::from_secs(600))
        .await;
    assert_eq!(status.finished, 1);
    let after = qemu_pids(&agent);
    assert_eq!(after.len(), 1, "one VM again: {after:?}");
    assert!(
        before.iter().all(|pid| !after.contains(pid)),
        "the orphan qemu {before:?} is gone, a new one runs: {after:?}"
    );
    let report = fleet.report(run.run).await;
    let dumpable = report.rule("sysctl_fs_suid_dumpable").unwrap();
    assert_eq!(dumpable.outcome, RuleOutcome::Fixed, "{dumpable:?}");
    let outcomes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM work_items WHERE run_id = $1 AND outcome IS NOT NULL",
    )
    .bind(run.run.0)
    .fetch_one(&fleet.db.pool)
    .await
    .unwrap();
    assert_eq!(outcomes, 1, "the lease ended once");

    fleet.shutdown().await;
    assert!(qemu_pids(&agent).is_empty(), "shutdown ends the VM");
}
