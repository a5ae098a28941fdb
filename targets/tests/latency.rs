//! Revert and exec latency of the container target, printed for the
//! record (not asserted: timing depends on the machine).

mod common;

use std::time::{Duration, Instant};

use common::{docker_with, target_image, Agent};

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn revert_and_exec_latency_is_measured() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;

    let started = Instant::now();
    let target = agent.target(&docker, 0).await;
    eprintln!("create + tagged baseline: {:?}", started.elapsed());
    target.write_file("/etc/fleet-mark", b"x").await.unwrap();
    let started = Instant::now();
    target.baseline().await.unwrap();
    eprintln!("committed baseline: {:?}", started.elapsed());

    let mut execs = Vec::new();
    let mut reverts = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        let outcome = target
            .exec(
                &format!("echo {i} > /etc/fleet-mark"),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        execs.push(started.elapsed());
        assert_eq!(outcome.exit_code, Some(0));

        let started = Instant::now();
        target.revert().await.unwrap();
        reverts.push(started.elapsed());
        assert_eq!(target.read_file("/etc/fleet-mark", 10).await.unwrap(), b"x");
    }
    eprintln!("exec p50 {:?} (all: {execs:?})", p50(execs.clone()));
    eprintln!("revert p50 {:?} (all: {reverts:?})", p50(reverts.clone()));
    target.remove().await.unwrap();
    // Reverts removed the old containers in the background; `remove` takes
    // what was still there.
    let leftovers = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(std::collections::HashMap::from([(
                "label".to_string(),
                vec![format!("fleet.agent={}", agent.id)],
            )])),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
