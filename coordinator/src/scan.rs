//! The planner's whole-profile scan: one `oscap xccdf eval --profile P` in
//! a throwaway container of the target image, so rules that already pass
//! there are recorded as `already_passing` instead of being leased. Every
//! Docker target starts from that image, so its baseline is theirs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fleet_scap::Evaluation;
use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};

use crate::error::CoordinatorError;

const SCAN_TIMEOUT: Duration = Duration::from_secs(600);
const RESULTS: &str = "/var/tmp/fleet-scan/arf.xml";
const MAX_ARF_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct BaselineScan {
    pub image: String,
}

impl BaselineScan {
    /// XCCDF ids of the rules of `profile` that pass on a fresh target.
    pub async fn passing(
        &self,
        datastream: &str,
        profile: &str,
    ) -> Result<HashSet<String>, CoordinatorError> {
        let started = Instant::now();
        let docker = connect_docker().map_err(scan_error)?;
        // Its own id per scan: concurrent submissions never share a container.
        let id = format!(
            "coordinator-scan-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut config = DockerTargetConfig::new(id, 0);
        config.image = self.image.clone();
        config.cpus = 2.0;
        config.memory_bytes = 1024 * 1024 * 1024;
        let target = DockerTarget::create(&docker, config).await.map_err(|e| {
            CoordinatorError::Config(format!(
                "baseline scan: cannot start {} ({e}); run `make target-image` or drop --scan-image",
                self.image
            ))
        })?;
        let result = scan(&target, datastream, profile).await;
        if let Err(e) = target.remove().await {
            tracing::warn!(error = %e, "removing the scan container failed");
        }
        let passing = result?;
        tracing::info!(
            image = %self.image, profile, passing = passing.len(),
            ms = started.elapsed().as_millis() as u64, "baseline scan done"
        );
        Ok(passing)
    }
}

async fn scan(
    target: &DockerTarget,
    datastream: &str,
    profile: &str,
) -> Result<HashSet<String>, CoordinatorError> {
    target.baseline().await.map_err(scan_error)?;
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    // Exit 2 means some rule failed, which is the point of scanning.
    let script = format!(
        "mkdir -p /var/tmp/fleet-scan && oscap xccdf eval --skip-valid --profile {} --results-arf {} {} >/dev/null 2>/var/tmp/fleet-scan/err; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 2 ] || {{ tail -c 2000 /var/tmp/fleet-scan/err; exit $rc; }}",
        q(profile),
        q(RESULTS),
        q(datastream)
    );
    let out = target
        .exec(&script, SCAN_TIMEOUT)
        .await
        .map_err(scan_error)?;
    if out.exit_code != Some(0) {
        return Err(CoordinatorError::Config(format!(
            "baseline scan: oscap exited with {:?}: {}",
            out.exit_code,
            out.output.trim()
        )));
    }
    let bytes = target
        .read_file(RESULTS, MAX_ARF_BYTES)
        .await
        .map_err(scan_error)?;
    let parsed =
        tokio::task::spawn_blocking(move || Evaluation::parse(&String::from_utf8_lossy(&bytes)))
            .await
            .map_err(|e| CoordinatorError::WorkerFailed(e.to_string()))?
            .map_err(|e| CoordinatorError::Config(format!("baseline scan results: {e}")))?;
    Ok(parsed
        .evaluated()
        .filter(|r| r.status.is_compliant())
        .map(|r| r.rule_id.clone())
        .collect())
}

fn scan_error(e: fleet_targets::TargetError) -> CoordinatorError {
    CoordinatorError::Config(format!("baseline scan: {e}"))
}
