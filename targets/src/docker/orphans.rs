//! What an earlier incarnation of an agent left behind when it was
//! SIGKILLed: its containers (targets and sandboxes) and baseline images.
//! Called at agent start, before new targets are created (DESIGN T2).

use std::collections::HashMap;

use bollard::query_parameters::{ListContainersOptions, ListImagesOptions, RemoveImageOptions};
use bollard::Docker;

use super::config::{validate_agent_id, BASELINE_REPO, LABEL_AGENT};
use super::container::{is_not_found, Container};
use crate::error::TargetError;

/// Removes every container labelled `fleet.agent=<agent_id>`, in any state,
/// and the agent's baseline images. Returns how many containers and images
/// went.
pub async fn cleanup_orphans(
    docker: &Docker,
    agent_id: &str,
) -> Result<(usize, usize), TargetError> {
    validate_agent_id(agent_id)?;
    let by_label = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_AGENT}={agent_id}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(by_label.clone()),
            ..Default::default()
        }))
        .await?;
    for summary in &containers {
        let Some(id) = summary.id.clone() else {
            continue;
        };
        let container = Container {
            docker: docker.clone(),
            name: id,
        };
        container.remove().await?;
        tracing::info!(agent = agent_id, container = ?summary.names, "orphan container removed");
    }

    // Committed baselines carry the label; tagged ones only the name.
    let by_reference = HashMap::from([(
        "reference".to_string(),
        vec![format!("{BASELINE_REPO}:{agent_id}-*")],
    )]);
    // Committed baselines carry the label: removed by id, tags and all,
    // dangling ones included. Tagged baselines share their id with the
    // target image, which must stay: those go by name only.
    let mut removed = 0;
    let labelled = docker
        .list_images(Some(ListImagesOptions {
            all: false,
            filters: Some(by_label),
            ..Default::default()
        }))
        .await?;
    for image in labelled {
        removed += remove_image(docker, &image.id, true, agent_id).await?;
    }
    let tagged = docker
        .list_images(Some(ListImagesOptions {
            all: false,
            filters: Some(by_reference),
            ..Default::default()
        }))
        .await?;
    for image in tagged {
        for reference in image
            .repo_tags
            .iter()
            .filter(|reference| is_baseline_of(reference, agent_id))
        {
            removed += remove_image(docker, reference, false, agent_id).await?;
        }
    }
    Ok((containers.len(), removed))
}

/// Removes one image; 1 if it went, 0 if it was gone already.
async fn remove_image(
    docker: &Docker,
    image: &str,
    force: bool,
    agent_id: &str,
) -> Result<usize, TargetError> {
    let options = RemoveImageOptions {
        force,
        ..Default::default()
    };
    match docker.remove_image(image, Some(options), None).await {
        Ok(_) => {
            tracing::info!(agent = agent_id, image, "orphan baseline removed");
            Ok(1)
        }
        Err(error) if is_not_found(&error) => Ok(0),
        Err(error) => Err(error.into()),
    }
}

/// `fleet-baseline:<agent_id>-<slot>`, and not another agent whose id
/// merely starts with `<agent_id>-`.
fn is_baseline_of(reference: &str, agent_id: &str) -> bool {
    reference
        .strip_prefix(BASELINE_REPO)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|tag| tag.strip_prefix(agent_id))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|slot| !slot.is_empty() && slot.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_agents_baselines_match() {
        assert!(is_baseline_of("fleet-baseline:a-0", "a"));
        assert!(is_baseline_of("fleet-baseline:a-12", "a"));
        assert!(!is_baseline_of("fleet-baseline:a-1-0", "a"));
        assert!(!is_baseline_of("fleet-baseline:ab-0", "a"));
        assert!(!is_baseline_of("fleet-target:a-0", "a"));
    }
}
