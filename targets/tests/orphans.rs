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
use fleet_targets::{cleanup_orphans, BASELINE_REPO};

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

    let mut child = Command::new(env!("CARGO_BIN_EXE_hold-targets"))
        .args([agent.id.as_str(), target_image().as_str()])
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
