//! The agent's side of the knowledge repo (DESIGN K2, K3): its local cache
//! (`fleet_knowledge::AgentCheckout`) and one worktree per lease.
//!
//! Used only when registration answered a `knowledge_url`. git2 blocks, so
//! every call runs on `spawn_blocking`. Nothing here may fail a lease: the
//! runner logs an error (with run, rule and epoch from its span), counts it
//! in `fleet_agent_knowledge_errors_total`, and goes on.
//!
//! What a completed lease leaves on its branch
//! `agent/<agent>/<run>/<rule>-e<epoch>`:
//!
//! ```text
//! attempts/<n>.sh     the script of attempt n, as proposed
//! result.json         {"outcome": …, "attempts": n}
//! skills/<rule>.sh    the passing script, for a Fixed outcome (K4 path)
//! lessons/<family>/<id>.md   each candidate lesson or ban the Reflector
//!                     drew, with provenance (K4 format); the dream stage
//!                     decides whether it reaches `main`
//! ```
//!
//! At the start of a lease the family's lessons, the ranking and the rule's
//! skill (replayed before the brain is asked, DESIGN H1) are read from the
//! same fetched `main` the worktree starts at.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};

use fleet_common::lesson::CandidateKind;
use fleet_common::Outcome;
use fleet_knowledge::{
    AgentCheckout, AgentCredentials, FetchedSkill, KnowledgeError, LeaseWorktree, LessonFile,
    LessonKind, Provenance, Ranking,
};

use crate::remediation::LeaseRecord;

/// What `main` held for a lease's family and rule when its worktree was
/// made.
#[derive(Debug, Default)]
pub struct MainKnowledge {
    pub ranking: Ranking,
    pub lessons: Vec<LessonFile>,
    /// `skills/<rule>.sh`, with its blob and commit.
    pub skill: Option<FetchedSkill>,
}

/// Where an agent keeps its cache unless `--work-dir` says otherwise.
pub fn default_work_dir(agent: &str) -> PathBuf {
    Path::new(".fleet/agents").join(agent)
}

/// The agent's cache of the knowledge repo, shared by its slots.
#[derive(Clone)]
pub struct Knowledge {
    checkout: Arc<Mutex<AgentCheckout>>,
    /// How long a lease keeps trying to reach the repo ([`REACH_FOR`]).
    patience: Duration,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge").finish_non_exhaustive()
    }
}

/// Runs blocking git work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KnowledgeError> + Send + 'static,
) -> Result<T, KnowledgeError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(KnowledgeError::Io {
            path: PathBuf::from("<git task>"),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

impl Knowledge {
    /// Keep trying to reach the repo for `patience` per step instead of
    /// [`REACH_FOR`].
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Delays between tries to reach the repo, `patience` in all.
    pub fn backoff(&self) -> ExponentialBuilder {
        reach_backoff(self.patience)
    }

    /// Opens (or creates) the cache at `work_dir` and removes what a
    /// previous incarnation left behind (K3).
    pub async fn open(
        work_dir: PathBuf,
        url: String,
        credentials: AgentCredentials,
    ) -> Result<Knowledge, KnowledgeError> {
        blocking(move || {
            let checkout = AgentCheckout::open_or_clone(&work_dir, &url, credentials)?;
            let removed = checkout.cleanup_leftovers()?;
            tracing::info!(
                work_dir = %work_dir.display(),
                leftovers_removed = removed,
                "knowledge cache ready"
            );
            Ok(Knowledge {
                checkout: Arc::new(Mutex::new(checkout)),
                patience: REACH_FOR,
            })
        })
        .await
    }

    /// Fetches `main`, creates this lease's worktree on its own branch and
    /// reads `family`'s lessons, the ranking and `rule`'s skill from that
    /// same `main`.
    pub async fn start_lease(
        &self,
        run: String,
        rule: String,
        epoch: u64,
        family: String,
    ) -> Result<(LeaseWorktree, MainKnowledge), KnowledgeError> {
        let checkout = self.checkout.clone();
        blocking(move || {
            // One lock for all of it: another slot's fetch must not move
            // the fetched `main` in between.
            let c = checkout.lock().unwrap_or_else(|p| p.into_inner());
            c.fetch_main()?;
            let wt = c.start_lease(&run, &rule, epoch)?;
            let main = MainKnowledge {
                ranking: c.ranking()?,
                lessons: c.fetched_lessons(&family)?,
                skill: c.fetched_skill(&rule)?,
            };
            Ok((wt, main))
        })
        .await
    }
}

/// Where a lease's candidates came from (their provenance).
#[derive(Debug, Clone)]
pub struct LeaseOrigin {
    pub run: String,
    pub rule: String,
    pub agent: String,
}

/// A completed lease: writes the attempts, `result.json`, the candidate
/// lessons and, for `Fixed`, the passing script as `skills/<rule>.sh`;
/// commits and pushes the branch. The worktree is removed whatever
/// happened; the first error is returned.
pub async fn publish(
    worktree: LeaseWorktree,
    origin: LeaseOrigin,
    outcome: Outcome,
    attempts: u32,
    record: LeaseRecord,
    push_backoff: ExponentialBuilder,
) -> Result<(), KnowledgeError> {
    blocking(move || {
        let written = write_and_push(&worktree, &origin, outcome, attempts, &record, push_backoff);
        let removed = worktree.remove();
        written.and(removed)
    })
    .await
}

/// How long a lease keeps trying to reach the knowledge repo (the
/// coordinator serves it, and may be restarting) before it goes on without
/// it. The lease itself lives in Redis and is renewed meanwhile.
pub const REACH_FOR: Duration = Duration::from_secs(30);

/// Delays between tries to reach the knowledge repo, `total` in all.
fn reach_backoff(total: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200).min(total))
        .with_max_delay(Duration::from_secs(2))
        .with_total_delay(Some(total))
        .without_max_times()
        .with_jitter()
}

fn write_and_push(
    wt: &LeaseWorktree,
    origin: &LeaseOrigin,
    outcome: Outcome,
    attempts: u32,
    record: &LeaseRecord,
    push_backoff: ExponentialBuilder,
) -> Result<(), KnowledgeError> {
    let rule = origin.rule.as_str();
    let scripts = &record.scripts;
    for (attempt, candidate) in &record.lessons {
        let file = LessonFile {
            id: candidate.id.clone(),
            kind: match candidate.kind {
                CandidateKind::Lesson => LessonKind::Lesson,
                CandidateKind::Ban => LessonKind::Ban,
            },
            family: candidate.family.clone(),
            scope: candidate.scope.render(rule),
            pattern: candidate.pattern.clone(),
            provenance: Provenance {
                run: origin.run.clone(),
                attempt: *attempt,
                agent: origin.agent.clone(),
                // The branch itself is the source; its commit is made below.
                source_commit: None,
                merged: Vec::new(),
            },
            body: format!("{}\n", candidate.text.trim_end()),
        };
        file.validate()?;
        wt.write(&file.path()?, file.render().as_bytes())?;
    }
    for (i, script) in scripts.iter().enumerate() {
        wt.write(&format!("attempts/{}.sh", i + 1), script.as_bytes())?;
    }
    let result = serde_json::json!({ "outcome": outcome, "attempts": attempts });
    let mut json = serde_json::to_vec_pretty(&result).unwrap_or_default();
    json.push(b'\n');
    wt.write("result.json", &json)?;
    if let Outcome::Fixed { attempt } = outcome {
        let passing = usize::try_from(attempt)
            .ok()
            .and_then(|a| a.checked_sub(1))
            .and_then(|i| scripts.get(i));
        if let Some(script) = passing {
            wt.write(
                &fleet_knowledge::layout::skill_path(rule)?,
                script.as_bytes(),
            )?;
        }
    }
    wt.commit(&format!(
        "{rule}: {} after {attempts} attempt(s), {} candidate lesson(s)",
        outcome.kind(),
        record.lessons.len()
    ))?;
    // The commit is local and done once; only the push goes over the
    // network, and an accepted outcome must have its branch (K3).
    (|| wt.push())
        .retry(push_backoff)
        .sleep(std::thread::sleep)
        .notify(|e, after| tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "knowledge: push failed; retrying"))
        .call()
}

/// A lost or handed-back lease: remove the worktree without pushing.
pub async fn discard(worktree: LeaseWorktree) -> Result<(), KnowledgeError> {
    blocking(move || worktree.remove()).await
}
