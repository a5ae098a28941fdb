//! Runaway and chatty scripts (DESIGN T1): killed at their timeout with
//! nothing left running, output capped without holding the agent up.

mod common;

use std::time::{Duration, Instant};

use common::{docker_with, stray_processes, target_image, Agent};
use fleet_targets::DockerTarget;

/// Processes left once the killed ones are reaped; polled because init
/// reaps asynchronously.
async fn strays_after_kill(target: &DockerTarget) -> Vec<String> {
    let mut strays = Vec::new();
    for _ in 0..20 {
        strays = stray_processes(target).await;
        if strays.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    strays
}

#[tokio::test]
async fn runaway_scripts_are_killed_with_their_whole_tree() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    assert_eq!(stray_processes(&target).await, Vec::<String>::new());

    let runaways = [
        ("busy loop", "echo started; while :; do :; done"),
        ("sleep", "echo started; sleep 600"),
        (
            "forking children",
            "echo started; for i in 1 2 3 4; do (while :; do sleep 1; done) & done; sleep 600 & wait",
        ),
        (
            "children in a new session",
            "echo started; setsid sleep 601 & nohup bash -c 'while :; do sleep 1; done' >/dev/null 2>&1 & sleep 602",
        ),
        (
            "closed output",
            "echo started; exec >&- 2>&-; sleep 605",
        ),
        (
            "child that clears its environment",
            "echo started; env -i /bin/sleep 603 & sleep 604",
        ),
    ];
    for (what, script) in runaways {
        let started = Instant::now();
        let outcome = target
            .exec(script, Duration::from_secs(2))
            .await
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        assert!(outcome.timed_out, "{what}: {outcome:?}");
        assert_eq!(outcome.exit_code, None, "{what}");
        assert!(outcome.output.contains("started"), "{what}: {outcome:?}");
        let strays = strays_after_kill(&target).await;
        assert!(strays.is_empty(), "{what}: left running: {strays:?}");
        eprintln!("{what}: killed, returned after {:?}", started.elapsed());
    }
    assert!(target.health().await);
    target.remove().await.unwrap();
}

#[tokio::test]
async fn a_script_whose_caller_gives_up_is_killed() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    let gave_up = tokio::time::timeout(
        Duration::from_secs(2),
        target.exec("sleep 606 & sleep 607", Duration::from_secs(600)),
    )
    .await;
    assert!(gave_up.is_err(), "exec ended on its own: {gave_up:?}");
    let strays = strays_after_kill(&target).await;
    assert!(strays.is_empty(), "left running: {strays:?}");
    target.remove().await.unwrap();
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hold_the_exec() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    // The main process exits at once; its child keeps the output pipe open.
    let outcome = target
        .exec("sleep 30 & echo done; exit 3", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.output, "done\n");
    target.remove().await.unwrap();
}

#[tokio::test]
async fn output_is_capped_and_stderr_interleaved() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    let cap = target.config().output_cap_bytes;

    let started = Instant::now();
    let flood = target
        .exec("yes | head -c 10M; echo tail", Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!("10 MB of output read in {:?}", started.elapsed());
    assert_eq!(flood.exit_code, Some(0));
    assert!(!flood.timed_out);
    assert!(flood.truncated);
    assert!(flood.output.len() <= cap, "{} > {cap}", flood.output.len());
    assert!(flood.output.starts_with("y\ny\n"));
    assert!(flood.output.contains("[output truncated"));

    let mixed = target
        .exec(
            "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 7",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(mixed.exit_code, Some(7));
    assert!(!mixed.truncated);
    assert_eq!(mixed.output, "out1\nerr1\nout2\nerr2\n");

    let stdin = target
        .exec(
            "read -r line; echo \"read=$? line=$line\"",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(stdin.output, "read=1 line=\n");
    target.remove().await.unwrap();
}

#[tokio::test]
async fn a_fork_bomb_hits_the_pid_limit_and_revert_brings_the_target_back() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;
    let target = agent.target(&docker, 0).await;
    let started = Instant::now();
    let outcome = target
        .exec(
            "bomb() { bomb | bomb & }; bomb; sleep 600",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    eprintln!("fork bomb: returned after {:?}", started.elapsed());
    assert!(outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.exit_code, None);
    assert!(
        outcome
            .contained
            .as_deref()
            .is_some_and(|r| r.contains("timed out after 5 s")),
        "{outcome:?}"
    );
    // Either the kill script got every process, or the container was
    // killed as a last resort; nothing of the bomb runs on.
    if target.health().await {
        let strays = strays_after_kill(&target).await;
        assert!(
            strays.is_empty(),
            "left running: {} processes",
            strays.len()
        );
    }
    target.revert().await.unwrap();
    assert!(target.health().await);
    target.remove().await.unwrap();
}
