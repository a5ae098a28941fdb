//! DESIGN T3: the baseline snapshot and the revert back to it.
//!
//! The baseline is an image. A target nothing has touched since it was
//! created is its image, so the baseline is just a tag (instant); otherwise
//! the container is committed. Revert removes the container and starts a
//! fresh one from the baseline image under the same name: a container's
//! writable layer cannot be rolled back in place.

use bollard::models::ContainerConfig;
use bollard::query_parameters::{CommitContainerOptions, RemoveImageOptions, TagImageOptions};
use bollard::Docker;

use super::config::{labels, BASELINE_REPO};
use super::container::is_not_found;
use crate::error::TargetError;

/// Tags `image` as the baseline `fleet-baseline:<tag>`.
pub(crate) async fn tag_baseline(
    docker: &Docker,
    image: &str,
    tag: &str,
) -> Result<(), TargetError> {
    let options = TagImageOptions {
        repo: Some(BASELINE_REPO.to_string()),
        tag: Some(tag.to_string()),
    };
    docker.tag_image(image, Some(options)).await?;
    Ok(())
}

/// Commits `container` as the baseline `fleet-baseline:<tag>`, labelled
/// for `cleanup_orphans`.
pub(crate) async fn commit_baseline(
    docker: &Docker,
    container: &str,
    tag: &str,
    agent_id: &str,
    slot: u32,
) -> Result<(), TargetError> {
    let options = CommitContainerOptions {
        container: Some(container.to_string()),
        repo: Some(BASELINE_REPO.to_string()),
        tag: Some(tag.to_string()),
        comment: Some("fleet target baseline".to_string()),
        pause: true,
        ..Default::default()
    };
    let config = ContainerConfig {
        labels: Some(labels(agent_id, slot, "baseline")),
        ..Default::default()
    };
    docker.commit_container(options, config).await?;
    Ok(())
}

/// Removes the baseline tag (and the image when nothing else names it).
pub(crate) async fn remove_baseline(docker: &Docker, image: &str) -> Result<(), TargetError> {
    match docker
        .remove_image(image, None::<RemoveImageOptions>, None)
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The image id a reference points at, if it exists.
pub(crate) async fn image_id(docker: &Docker, image: &str) -> Result<Option<String>, TargetError> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(inspect.id),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(error.into()),
    }
}
