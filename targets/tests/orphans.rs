//! An agent SIGKILLed while holding targets leaves containers and baseline
//! images; its next incarnation's `cleanup_orphans` removes them (DESIGN
//! T2), and nothing of other agents.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptions, TagImageOptions};
use common::{docker_with, target_image, Agent};
use fleet_targets::{cleanup_orphans, DockerTarget, DockerTargetConfig, BASELINE_REPO};

const HOLD_AGENT: &str = "FLEET_HOLD_AGENT";

/// Not a test on its own: the child process of
/// `targets_of_a_killed_agent_are_removed_by_its_successor`, which holds
/// two targets until it is killed.
#[tokio::test]
#[ignore = "run by orphan test as its child process"]
async fn hold_targets_until_killed() {
    let Ok(agent_id) = std::env::var(HOLD_AGENT) else {
        return;
    };
    let docker = docker_with(&target_image()).await;
    for slot in [0, 1] {
        let mut config = DockerTargetConfig::new(agent_id.clone(), slot);
        config.image = target_image();
        let target = DockerTarget::create(&docker, config).await.unwrap();
        if slot == 1 {
            // Touched before the baseline, so it is committed, not tagged.
            target.write_file("/etc/fleet-mark", b"x").await.unwrap();
        }
        target.baseline().await.unwrap();
    }
    println!("READY");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

async fn agent_containers(docker: &bollard::Docker, agent_id: &str) -> usize {
    let filters = HashMap::from([("label".to_string(), vec![format!("fleet.agent={agent_id}")])]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap()
        .len()
}

async fn image_exists(docker: &bollard::Docker, image: &str) -> bool {
    docker.inspect_image(image).await.is_ok()
}

#[tokio::test]
async fn targets_of_a_killed_agent_are_removed_by_its_successor() {
    let agent = Agent::new();
    let docker = docker_with(&target_image()).await;

    // Another agent whose id starts with this one's: must survive.
    let neighbour = Agent {
        id: format!("{}-9", agent.id),
    };
    let neighbour_baseline = format!("{BASELINE_REPO}:{}-0", neighbour.id);
    docker
        .tag_image(
            &target_image(),
            Some(TagImageOptions {
                repo: Some(BASELINE_REPO.to_string()),
                tag: Some(format!("{}-0", neighbour.id)),
            }),
        )
        .await
        .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "hold_targets_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLD_AGENT, &agent.id)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.trim() == "READY")
    });
    let ready = tokio::time::timeout(Duration::from_secs(300), ready)
        .await
        .expect("child ready in time")
        .unwrap();
    assert!(ready, "child exited before holding its targets");
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();

    let tagged = format!("{BASELINE_REPO}:{}-0", agent.id);
    let committed = format!("{BASELINE_REPO}:{}-1", agent.id);
    assert_eq!(agent_containers(&docker, &agent.id).await, 2);
    assert!(image_exists(&docker, &tagged).await);
    assert!(image_exists(&docker, &committed).await);

    let (containers, images) = cleanup_orphans(&docker, &agent.id).await.unwrap();
    assert_eq!((containers, images), (2, 2));
    assert_eq!(agent_containers(&docker, &agent.id).await, 0);
    assert!(!image_exists(&docker, &tagged).await);
    assert!(!image_exists(&docker, &committed).await);
    // The image the tagged baseline named, and the neighbour, stay.
    assert!(image_exists(&docker, &target_image()).await);
    assert!(image_exists(&docker, &neighbour_baseline).await);

    // Nothing left: a second run finds nothing.
    assert_eq!(cleanup_orphans(&docker, &agent.id).await.unwrap(), (0, 0));
}
