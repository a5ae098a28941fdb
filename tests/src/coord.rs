//! In-process coordinator pieces on a test's own schema and key prefix.

use fleet_common::api::{SubmitRun, SubmitRunResponse};
use fleet_common::settings::LeaseSettings;
use fleet_common::Budgets;
use fleet_coordinator::ingest::Ingester;
use fleet_coordinator::metrics::Metrics;
use fleet_coordinator::planner::{self, SkillPacks};

use crate::db::TestDb;
use crate::procs::repo_root;
use crate::queue::TestQueue;

/// A copy of the repo's skill packs with `extra` appended to `sim-demo`'s
/// `pack.toml` (a `[dream]` limit, `[[requires]]`, …), for a coordinator's
/// `--skill-packs`.
pub fn packs_with(extra: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(crate::services::unique("packs"));
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("skill-packs"))
        .arg(&dir)
        .status()
        .expect("cp");
    assert!(status.success());
    let pack = dir.join("sim-demo/pack.toml");
    let text = std::fs::read_to_string(&pack).unwrap();
    std::fs::write(&pack, format!("{text}\n{extra}\n")).unwrap();
    dir
}

/// `[[requires]]` that make `sysctl_*` and `service_*` rules need a VM, as
/// the Debian 11 pack says (issue 24).
pub const VM_RULES: &str = "[[requires]]\nrule = \"sysctl_*\"\ntarget = \"vm\"\n\
                            [[requires]]\nrule = \"service_*\"\ntarget = \"vm\"\n";

pub struct TestCoordinator {
    pub db: TestDb,
    pub queue: TestQueue,
    pub packs: SkillPacks,
    pub metrics: Metrics,
}

impl TestCoordinator {
    pub async fn new(settings: LeaseSettings) -> Self {
        Self {
            db: TestDb::new().await,
            queue: TestQueue::new(settings).await,
            packs: SkillPacks::new(repo_root().join("skill-packs")),
            metrics: Metrics::new(),
        }
    }

    pub fn ingester(&self) -> Ingester {
        Ingester::new(
            self.db.pool.clone(),
            self.queue.client.clone(),
            self.metrics.clone(),
            "test".into(),
        )
    }

    pub fn submission(rules: &[&str]) -> SubmitRun {
        SubmitRun {
            skill_pack: "sim-demo".into(),
            profile: None,
            rules: rules.iter().map(|r| r.to_string()).collect(),
            budgets: Budgets::default(),
            priority: 100,
        }
    }

    pub async fn submit(&self, rules: &[&str]) -> SubmitRunResponse {
        planner::submit(
            &self.db.pool,
            &self.queue.client,
            &self.packs,
            Self::submission(rules),
        )
        .await
        .expect("submit")
    }
}
