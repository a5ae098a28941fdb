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
