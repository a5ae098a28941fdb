//! The checker run after the queue drains, over Postgres, Redis and the
//! knowledge repo, in the style of Jepsen's total-queue checker: what went
//! in came out exactly once, and nothing that lost its lease left a mark.

use super::fleet::HostFleet;
use crate::chaos;
use crate::fleet::missing_lease_branches;
use fleet_common::RunId;

#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub tasks: u64,
    /// Tasks without exactly one accepted outcome, plus holes in an agent
    /// incarnation's event sequence.
    pub lost: u64,
    pub duplicated: u64,
    pub stale_accepted: u64,
    /// Completions Redis refused (recorded, never counted), and leases
    /// reclaimed from their holders: the faults' visible effect.
    pub stale_rejected: u64,
    pub lease_losses: u64,
    /// Scripts that started on a target after their lease was lost (the
    /// lease reclaimed, or the task granted again under a later epoch).
    pub zombie_writes: u64,
    /// Accepted agent outcomes without their lease branch (K3).
    pub branches_missing: Vec<String>,
    pub branches_checked: u64,
    /// Leases or queued entries Redis still holds after the run.
    pub redis_leftovers: u64,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.stale_accepted == 0
            && self.zombie_writes == 0
            && self.branches_missing.is_empty()
            && self.redis_leftovers == 0
    }

    pub fn add(&mut self, o: Verdict) {
        self.tasks += o.tasks;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.stale_accepted += o.stale_accepted;
        self.stale_rejected += o.stale_rejected;
        self.lease_losses += o.lease_losses;
        self.zombie_writes += o.zombie_writes;
        self.branches_missing.extend(o.branches_missing);
        self.branches_checked += o.branches_checked;
        self.redis_leftovers += o.redis_leftovers;
    }
}

/// Every check over one drained run.
pub async fn check(fleet: &HostFleet, run: RunId) -> Verdict {
    let base = chaos::check(&fleet.pool, run.0).await;
    let (branches_checked, branches_missing) =
        missing_lease_branches(&fleet.pool, &fleet.knowledge_dir(), run).await;
    Verdict {
        tasks: base.tasks,
        lost: base.lost,
        duplicated: base.duplicated,
        stale_accepted: base.stale_accepted,
        stale_rejected: base.stale_rejected,
        lease_losses: base.lease_losses,
        zombie_writes: chaos::zombie_writes(&fleet.pool, run.0).await.len() as u64,
        branches_missing,
        branches_checked: branches_checked as u64,
        redis_leftovers: redis_leftovers(fleet).await,
    }
}

/// After the run: no lease held, nothing queued.
async fn redis_leftovers(fleet: &HostFleet) -> u64 {
    match fleet.leases.queue_depth().await {
        Ok(d) => d.ready + d.leased,
        Err(_) => u64::MAX,
    }
}

/// `main` only ever moved by fast-forward: each tip seen during the run is
/// an ancestor of the next, and no merge commit entered.
pub fn main_fast_forward_only(knowledge: &std::path::Path, tips: &[String]) -> bool {
    let ancestor = |a: &str, b: &str| {
        std::process::Command::new("git")
            .arg("--git-dir")
            .arg(knowledge)
            .args(["merge-base", "--is-ancestor", a, b])
            .status()
            .is_ok_and(|s| s.success())
    };
    let merges = |a: &str, b: &str| {
        std::process::Command::new("git")
            .arg("--git-dir")
            .arg(knowledge)
            .args(["rev-list", "--merges", &format!("{a}..{b}")])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(true)
    };
    tips.windows(2)
        .all(|w| w[0] == w[1] || (ancestor(&w[0], &w[1]) && !merges(&w[0], &w[1])))
}

/// `main`'s tip in the bare repo.
pub fn main_tip(knowledge: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(knowledge)
        .args(["rev-parse", "refs/heads/main"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
