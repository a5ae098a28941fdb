//! Bodies of the coordinator's HTTP API, shared by its CLI and the agents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, RunId};
use crate::settings::LeaseSettings;
use crate::target_class::TargetClass;
use crate::task::Budgets;

/// `POST /api/v1/runs` (needs the API token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// Skill pack name: a directory under the coordinator's `--skill-packs`.
    pub skill_pack: String,
    /// Profile; defaults to the skill pack's.
    #[serde(default)]
    pub profile: Option<String>,
    /// Rule ids to remediate, in submission order, at most 100,000, unique.
    /// Empty or absent: every rule of the profile (packs with SCAP content).
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub budgets: Budgets,
    /// Lower runs first among runs in the queue. Default 100.
    #[serde(default = "SubmitRun::default_priority")]
    pub priority: u32,
}

impl SubmitRun {
    pub const MAX_RULES: usize = 100_000;

    fn default_priority() -> u32 {
        100
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRunResponse {
    pub run: RunId,
    pub tasks: u64,
    /// Tasks recorded as `already_passing` by the planner's baseline scan
    /// (never leased); included in `tasks`.
    #[serde(default)]
    pub already_passing: u64,
    /// Tasks recorded as `needs_target`: their rules need a target class
    /// (`vm`) no live agent had (never leased, never escalated); included
    /// in `tasks`.
    #[serde(default)]
    pub needs_target: u64,
}

/// `GET /api/v1/runs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStatus {
    pub run: RunId,
    pub skill_pack: String,
    pub profile: String,
    /// `running` or `completed`.
    pub status: String,
    pub total: u64,
    pub finished: u64,
    pub fixed: u64,
    /// Fixed on the first attempt.
    #[serde(default)]
    pub fixed_first_try: u64,
    pub already_passing: u64,
    pub escalated: u64,
    pub escalated_by_reason: BTreeMap<String, u64>,
    /// Rules the planner recorded `needs_target`: no live agent had a
    /// target of the class they need, so they were never leased nor
    /// escalated (issue 24). Out of `escalated` and of the fix rate.
    #[serde(default)]
    pub needs_target: u64,
    /// Those rules by the target class they need (`vm`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub needs_target_by_class: BTreeMap<String, TargetNeed>,
    pub lease_losses: u64,
    pub stale_completions_rejected: u64,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Mean attempts over fixed and escalated rules; `None` before any.
    #[serde(default)]
    pub mean_attempts: Option<f64>,
    /// Mean wall time of a fixed rule, ms; `None` before any.
    #[serde(default)]
    pub wall_ms_per_fixed: Option<f64>,
    /// Mean wall time of an escalated rule, ms; `None` before any.
    #[serde(default)]
    pub wall_ms_per_escalated: Option<f64>,
    /// The dream stage's comparison with the previous comparable run;
    /// `None` on a first run or before the dream stage ran (D6).
    #[serde(default)]
    pub comparison: Option<RunComparison>,
    /// The dream stage's pass over this run: `done`, `failed`, or `None`
    /// while the run is running or the pass has not happened yet.
    #[serde(default)]
    pub dream: Option<String>,
    /// `learn` (rule tasks), `compose` (a bundle's composition check) or
    /// `harden` (a rollout to hosts).
    #[serde(default = "RunStatus::default_kind")]
    pub kind: String,
    /// The composition check of `main`'s bundle that followed this run's
    /// dream stage (or this compose run's own), once it finished (H3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<crate::host::BundleCheck>,
}

/// The rules of a run that need one target class no agent had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetNeed {
    pub rules: u64,
    /// The first of them by rule id, at most [`TargetNeed::LISTED`].
    pub examples: Vec<String>,
}

impl TargetNeed {
    /// Rule ids a status lists per target class.
    pub const LISTED: usize = 10;
}

impl RunStatus {
    /// One line per target class the run's `needs_target` rules need:
    /// `needs a vm target: 7 (sysctl_fs_suid_dumpable, …)`, as `status`
    /// and `report` print them.
    pub fn needs_target_lines(&self) -> Vec<String> {
        self.needs_target_by_class
            .iter()
            .map(|(class, need)| {
                let more = if (need.examples.len() as u64) < need.rules {
                    ", …"
                } else {
                    ""
                };
                format!(
                    "needs a {class} target: {} ({}{more})",
                    need.rules,
                    need.examples.join(", ")
                )
            })
            .collect()
    }
}

/// A run against the previous comparable run (same skill pack and
/// profile): rules fixed now and not then (wins) and the reverse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunComparison {
    pub previous_run: RunId,
    pub wins: u64,
    pub regressions: u64,
    pub fix_rate: Option<f64>,
    pub previous_fix_rate: Option<f64>,
    pub first_try_rate: Option<f64>,
    pub previous_first_try_rate: Option<f64>,
    /// Each rule that was won or regressed, with the lessons its prompts
    /// showed in this run.
    #[serde(default)]
    pub changes: Vec<RuleChange>,
    /// This run's rules whose outcome says nothing about knowledge (an
    /// infrastructure reason: an outage, a dead target, a lost lease), by
    /// reason; left out of wins, regressions and reverts (DESIGN D6).
    #[serde(default)]
    pub not_comparable: std::collections::BTreeMap<String, u64>,
    /// Rules left out because their outcome in the previous run was not
    /// comparable.
    #[serde(default)]
    pub previous_not_comparable: u64,
    /// Why this run reverts nothing (too many rules not comparable), when
    /// that is so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_withheld: Option<String>,
}

/// One rule whose outcome changed against the previous comparable run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleChange {
    pub rule: String,
    /// `win` or `regression`.
    pub change: String,
    pub lessons_shown: Vec<String>,
}

impl RunComparison {
    /// wins / regressions; infinite when nothing regressed but something
    /// was won, `None` when nothing changed.
    pub fn ratio(&self) -> Option<f64> {
        self.counts().ratio()
    }

    /// Its counts, as a `RunHistory` shows them.
    pub fn counts(&self) -> PointComparison {
        PointComparison {
            previous_run: self.previous_run,
            wins: self.wins,
            regressions: self.regressions,
        }
    }

    /// This run's rules left out as not comparable.
    pub fn not_comparable_total(&self) -> u64 {
        self.not_comparable.values().sum()
    }

    /// `not_comparable=N (reason=n, …)`, the figure `status` and `report`
    /// print; `None` when every rule was comparable.
    pub fn not_comparable_text(&self) -> Option<String> {
        let n = self.not_comparable_total() + self.previous_not_comparable;
        if n == 0 {
            return None;
        }
        let mut parts: Vec<String> = self
            .not_comparable
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        if self.previous_not_comparable > 0 {
            parts.push(format!("previous_run={}", self.previous_not_comparable));
        }
        Some(format!("not_comparable={n} ({})", parts.join(", ")))
    }

    /// Change in fix rate since the previous run.
    pub fn fix_rate_delta(&self) -> Option<f64> {
        Some(self.fix_rate? - self.previous_fix_rate?)
    }

    /// Change in first-try rate since the previous run.
    pub fn first_try_rate_delta(&self) -> Option<f64> {
        Some(self.first_try_rate? - self.previous_first_try_rate?)
    }
}

/// `GET /api/v1/runs/{id}/report`: the run's totals (every `RunStatus`
/// field, flattened) with its rates, and one row per rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub totals: RunStatus,
    /// fixed / (fixed + escalated); `None` before any.
    pub fix_rate: Option<f64>,
    /// fixed on the first attempt / fixed; `None` before any fix.
    pub first_try_rate: Option<f64>,
    /// Sorted by rule id.
    pub rules: Vec<RuleReport>,
}

impl RunReport {
    /// The row of rule `id`, if the run has it.
    pub fn rule(&self, id: &str) -> Option<&RuleReport> {
        self.rules.iter().find(|r| r.rule == id)
    }

    /// Totals with their rates; `rules` are sorted by rule id.
    pub fn new(totals: RunStatus, mut rules: Vec<RuleReport>) -> Self {
        rules.sort_by(|a, b| a.rule.cmp(&b.rule));
        Self {
            fix_rate: totals.fix_rate(),
            first_try_rate: totals.first_try_rate(),
            totals,
            rules,
        }
    }
}

/// `GET /api/v1/runs/{id}/history`: the runs comparable with a run (same
/// skill pack and profile), oldest first, for charts across runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHistory {
    pub run: RunId,
    pub skill_pack: String,
    pub profile: String,
    /// The completed comparable runs up to this one, then this run itself
    /// (whatever its status); oldest first, at most `RunHistory::MAX_RUNS`
    /// (the latest ones).
    pub runs: Vec<RunPoint>,
}

impl RunHistory {
    pub const MAX_RUNS: usize = 50;
}

/// One run of a `RunHistory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPoint {
    pub run: RunId,
    /// `running` or `completed`.
    pub status: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub fixed: u64,
    pub fixed_first_try: u64,
    pub escalated: u64,
    pub already_passing: u64,
    /// fixed / (fixed + escalated); `None` before any.
    pub fix_rate: Option<f64>,
    /// fixed on the first attempt / fixed; `None` before any fix.
    pub first_try_rate: Option<f64>,
    /// The dream stage's comparison with the previous comparable run;
    /// `None` on a first run or before the dream stage ran.
    pub comparison: Option<PointComparison>,
}

/// The counts of a `RunComparison`, without its per-rule changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointComparison {
    pub previous_run: RunId,
    pub wins: u64,
    pub regressions: u64,
}

impl PointComparison {
    /// wins / regressions, as `RunComparison::ratio`: infinite when
    /// nothing regressed but something was won, `None` when nothing changed.
    pub fn ratio(&self) -> Option<f64> {
        match (self.wins, self.regressions) {
            (0, 0) => None,
            (w, 0) => Some(w as f64 / 0.0),
            (w, r) => Some(w as f64 / r as f64),
        }
    }
}

/// One rule of a run in its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReport {
    pub rule: String,
    pub family: String,
    pub outcome: RuleOutcome,
    /// Why it was escalated; for `needs_target`, the target class it needs.
    pub reason: Option<String>,
    /// Attempts the agent reported; `None` while pending and for rules the
    /// coordinator dead-lettered (`lease_lost`: no agent reported them).
    pub attempts: Option<u32>,
    /// Wall time the agent reported, ms; `None` as for `attempts`, and for
    /// rules the planner's baseline scan found passing.
    pub wall_ms: Option<u64>,
    /// The attempt that fixed it.
    pub fixed_attempt: Option<u32>,
    /// Where the fixing script came from (DESIGN H1); `None` unless fixed,
    /// and for fixes recorded before sources were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_by: Option<FixSource>,
}

/// Where a fixing script came from: `attempts.script_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixSource {
    /// The rule's skill on `main`, replayed: no LLM call.
    Skill,
    /// A script the brain proposed.
    Brain,
}

impl FixSource {
    pub fn from_column(source: &str) -> Option<Self> {
        match source {
            "skill" => Some(Self::Skill),
            "brain" => Some(Self::Brain),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skill => "skill",
            Self::Brain => "brain",
        }
    }
}

/// Where a rule of a run stands: `Outcome`'s kinds, or not finished yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    Pending,
    Fixed,
    AlreadyPassing,
    Escalated,
    /// Never leased: no live agent had the target class the rule needs.
    NeedsTarget,
}

impl RuleOutcome {
    /// From `work_items.outcome` (`None`: still pending).
    pub fn from_column(outcome: Option<&str>) -> Option<Self> {
        match outcome {
            None => Some(Self::Pending),
            Some("fixed") => Some(Self::Fixed),
            Some("already_passing") => Some(Self::AlreadyPassing),
            Some("escalated") => Some(Self::Escalated),
            Some("needs_target") => Some(Self::NeedsTarget),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Fixed => "fixed",
            Self::AlreadyPassing => "already_passing",
            Self::Escalated => "escalated",
            Self::NeedsTarget => "needs_target",
        }
    }
}

/// The means of `RunStatus`, from per-rule rows: what the coordinator's
/// SQL computes, as plain arithmetic (rules without a figure are left out).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunMeans {
    pub mean_attempts: Option<f64>,
    pub wall_ms_per_fixed: Option<f64>,
    pub wall_ms_per_escalated: Option<f64>,
}

impl RunMeans {
    pub fn of(rules: &[RuleReport]) -> Self {
        let attempted =
            |r: &&RuleReport| matches!(r.outcome, RuleOutcome::Fixed | RuleOutcome::Escalated);
        let of = |o: RuleOutcome| {
            mean(
                rules
                    .iter()
                    .filter(|r| r.outcome == o)
                    .filter_map(|r| r.wall_ms),
            )
        };
        Self {
            mean_attempts: mean(
                rules
                    .iter()
                    .filter(attempted)
                    .filter_map(|r| r.attempts.map(u64::from)),
            ),
            wall_ms_per_fixed: of(RuleOutcome::Fixed),
            wall_ms_per_escalated: of(RuleOutcome::Escalated),
        }
    }
}

/// Arithmetic mean; `None` of nothing.
fn mean(values: impl Iterator<Item = u64>) -> Option<f64> {
    let (sum, n) = values.fold((0u128, 0u64), |(s, n), v| (s + u128::from(v), n + 1));
    (n > 0).then(|| sum as f64 / n as f64)
}

/// `POST /api/v1/agents/register` (needs the agent token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub agent: AgentId,
    pub host: String,
    pub version: String,
}

/// What an agent needs to join: where Redis is, how leases are timed, and
/// where the knowledge repo is with this agent's git password.
#[derive(Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    pub redis_url: String,
    pub key_prefix: String,
    pub lease: LeaseSettings,
    /// Git smart-HTTP URL of the knowledge repo, e.g.
    /// `http://coordinator:8080/git/knowledge.git`; `None`: not served.
    #[serde(default)]
    pub knowledge_url: Option<String>,
    /// This agent's password for `knowledge_url` (user = agent id).
    #[serde(default)]
    pub git_password: Option<String>,
    /// This agent process's incarnation, numbered in Postgres at each
    /// registration (event sequences restart per incarnation, E1); `None`
    /// in the shared part of the config and from older coordinators.
    #[serde(default)]
    pub incarnation: Option<u32>,
}

impl std::fmt::Debug for AgentConfig {
    // The git password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("redis_url", &crate::redact::redact_url(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("lease", &self.lease)
            .field("knowledge_url", &self.knowledge_url)
            .field(
                "git_password",
                &self.git_password.as_ref().map(|_| "<redacted>"),
            )
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

/// One entry the dream stage wrote (or, in a dry run, would write) to the
/// promotion ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerLine {
    /// Ledger id; `None` in a dry run.
    pub id: Option<i64>,
    pub lesson: String,
    /// `lesson`, `ban` or `skill`.
    pub kind: String,
    /// `promote`, `revert`, or an operator's `approve` / `reject`.
    pub action: String,
    /// `APPLY`, `REJECT`, `ESCALATE` or `DEFER`.
    pub verdict: String,
    pub reason: String,
    /// The commit on `main` this entry made, if it moved `main`.
    pub commit: Option<String>,
}

/// `POST /api/v1/runs/{id}/dream` (and what runs when a run completes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DreamReport {
    pub run: RunId,
    pub dry_run: bool,
    /// `None` on a first run of its skill pack and profile.
    pub comparison: Option<RunComparison>,
    pub reverted: Vec<LedgerLine>,
    pub promotions: Vec<LedgerLine>,
    pub ranking_changed: bool,
    pub main_before: Option<String>,
    pub main_after: Option<String>,
    pub duration_ms: u64,
}

/// `GET /api/v1/promotions`: one ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionInfo {
    pub id: i64,
    pub run: RunId,
    pub lesson: String,
    pub kind: Option<String>,
    pub family: Option<String>,
    pub rule: Option<String>,
    pub action: String,
    pub verdict: String,
    pub reason: Option<String>,
    /// Waiting for an operator (ESCALATE not yet decided).
    pub open: bool,
    /// The candidate's text (lesson, ban explanation or script).
    pub text: Option<String>,
    /// Every gate's result, as recorded.
    pub gates: serde_json::Value,
    pub commit_after: Option<String>,
    pub reverted_by: Option<i64>,
    pub created_at: String,
}

/// `POST /api/v1/promotions/{id}/approve|reject`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionDecision {
    /// Who decided, for the ledger.
    pub by: String,
}

/// `GET /api/v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub agent: AgentId,
    pub host: String,
    pub version: String,
    pub registered_at: String,
    /// Redis-clock ms of the last lease call, renewal or heartbeat.
    pub last_seen_ms: Option<i64>,
    pub alive: bool,
    /// The class of its targets, as its presence says; `None` when Redis
    /// has not seen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_class: Option<TargetClass>,
}

impl RunStatus {
    fn default_kind() -> String {
        "learn".into()
    }

    /// fixed / (fixed + escalated): rules already passing are not counted.
    pub fn fix_rate(&self) -> Option<f64> {
        let attempted = self.fixed + self.escalated;
        (attempted > 0).then(|| self.fixed as f64 / attempted as f64)
    }

    /// Share of fixed rules that were fixed on the first attempt.
    pub fn first_try_rate(&self) -> Option<f64> {
        (self.fixed > 0).then(|| self.fixed_first_try as f64 / self.fixed as f64)
    }
}

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(fixed: u64, fixed_first_try: u64, escalated: u64) -> RunStatus {
        RunStatus {
            comparison: None,
            dream: None,
            kind: "learn".into(),
            bundle: None,
            run: RunId(1),
            skill_pack: "p".into(),
            profile: "x".into(),
            status: "completed".into(),
            total: fixed + escalated + 1,
            finished: fixed + escalated + 1,
            fixed,
            fixed_first_try,
            already_passing: 1,
            escalated,
            escalated_by_reason: BTreeMap::new(),
            needs_target: 0,
            needs_target_by_class: BTreeMap::new(),
            lease_losses: 0,
            stale_completions_rejected: 0,
            created_at: String::new(),
            finished_at: None,
            mean_attempts: None,
            wall_ms_per_fixed: None,
            wall_ms_per_escalated: None,
        }
    }

    fn rule(
        rule: &str,
        outcome: RuleOutcome,
        attempts: Option<u32>,
        wall_ms: Option<u64>,
    ) -> RuleReport {
        RuleReport {
            rule: rule.into(),
            family: rule.into(),
            outcome,
            reason: None,
            attempts,
            wall_ms,
            fixed_attempt: None,
            fixed_by: None,
        }
    }

    #[test]
    fn rates_leave_already_passing_out_and_are_none_without_a_denominator() {
        let s = status(3, 2, 1);
        assert_eq!(s.fix_rate(), Some(0.75));
        assert_eq!(s.first_try_rate(), Some(2.0 / 3.0));
        let none = status(0, 0, 0);
        assert_eq!((none.fix_rate(), none.first_try_rate()), (None, None));
        let all_escalated = status(0, 0, 2);
        assert_eq!(all_escalated.fix_rate(), Some(0.0));
        assert_eq!(all_escalated.first_try_rate(), None);
    }

    #[test]
    fn means_cover_fixed_and_escalated_rules_with_a_figure() {
        let rules = [
            rule("a", RuleOutcome::Fixed, Some(1), Some(1_000)),
            rule("b", RuleOutcome::Fixed, Some(2), Some(3_000)),
            rule("c", RuleOutcome::Escalated, Some(3), Some(6_000)),
            rule("d", RuleOutcome::Escalated, Some(1), Some(2_000)),
            // Dead-lettered by the coordinator: no figures, left out.
            rule("e", RuleOutcome::Escalated, None, None),
            // Neither counts toward attempts or wall time.
            rule("f", RuleOutcome::AlreadyPassing, Some(0), Some(500)),
            rule("g", RuleOutcome::Pending, None, None),
        ];
        assert_eq!(
            RunMeans::of(&rules),
            RunMeans {
                mean_attempts: Some(1.75),
                wall_ms_per_fixed: Some(2_000.0),
                wall_ms_per_escalated: Some(4_000.0),
            }
        );
        assert_eq!(RunMeans::of(&rules[5..]), RunMeans::default());
        assert_eq!(
            RunMeans::of(&[rule(
                "h",
                RuleOutcome::Fixed,
                Some(u32::MAX),
                Some(u64::MAX)
            )])
            .wall_ms_per_fixed,
            Some(u64::MAX as f64),
            "no overflow"
        );
    }

    #[test]
    fn a_report_sorts_its_rules_and_carries_the_rates() {
        let report = RunReport::new(
            status(1, 1, 1),
            vec![
                rule("b", RuleOutcome::Escalated, Some(3), Some(1)),
                rule("a", RuleOutcome::Fixed, Some(1), Some(1)),
            ],
        );
        assert_eq!(report.rules[0].rule, "a");
        assert_eq!(
            (report.fix_rate, report.first_try_rate),
            (Some(0.5), Some(1.0))
        );
        // The totals are flattened: a report reads as a status too.
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["fixed"], 1);
        assert_eq!(json["rules"][1]["outcome"], "escalated");
        let status: RunStatus = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(status.escalated, 1);
        let back: RunReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.rules, report.rules);
    }

    #[test]
    fn a_status_from_an_older_coordinator_still_decodes() {
        let mut json = serde_json::to_value(status(1, 1, 0)).unwrap();
        let obj = json.as_object_mut().unwrap();
        for k in [
            "mean_attempts",
            "wall_ms_per_fixed",
            "wall_ms_per_escalated",
        ] {
            obj.remove(k);
        }
        let s: RunStatus = serde_json::from_value(json).unwrap();
        assert_eq!(s.mean_attempts, None);
    }

    #[test]
    fn needs_target_lines_name_the_class_count_and_first_rules() {
        let mut s = status(1, 1, 1);
        assert!(s.needs_target_lines().is_empty());
        s.needs_target = 12;
        s.needs_target_by_class.insert(
            "vm".into(),
            TargetNeed {
                rules: 12,
                examples: vec![
                    "service_cron_enabled".into(),
                    "sysctl_fs_suid_dumpable".into(),
                ],
            },
        );
        assert_eq!(
            s.needs_target_lines(),
            ["needs a vm target: 12 (service_cron_enabled, sysctl_fs_suid_dumpable, …)"]
        );
        s.needs_target_by_class.get_mut("vm").unwrap().rules = 2;
        assert_eq!(
            s.needs_target_lines(),
            ["needs a vm target: 2 (service_cron_enabled, sysctl_fs_suid_dumpable)"]
        );
        // Needing a target is neither a fix nor an escalation.
        assert_eq!(s.fix_rate(), Some(0.5));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["needs_target_by_class"]["vm"]["rules"], 2);
        let back: RunStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.needs_target_by_class, s.needs_target_by_class);
    }

    #[test]
    fn a_history_point_has_the_comparisons_ratio() {
        let c = |wins, regressions| PointComparison {
            previous_run: RunId(1),
            wins,
            regressions,
        };
        assert_eq!(c(0, 0).ratio(), None);
        assert!(c(2, 0).ratio().unwrap().is_infinite());
        assert_eq!(c(3, 2).ratio(), Some(1.5));
        let json = serde_json::to_value(c(3, 2)).unwrap();
        assert_eq!(json["wins"], 3);
        assert_eq!(json["previous_run"], 1);
    }

    #[test]
    fn rule_outcomes_read_the_work_items_column() {
        for o in [
            RuleOutcome::Fixed,
            RuleOutcome::AlreadyPassing,
            RuleOutcome::Escalated,
            RuleOutcome::NeedsTarget,
        ] {
            assert_eq!(RuleOutcome::from_column(Some(o.as_str())), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(RuleOutcome::from_column(None), Some(RuleOutcome::Pending));
        assert_eq!(RuleOutcome::from_column(Some("bogus")), None);
    }
}

/// `POST /api/v1/agents/{id}/tokens` asks for a new token for one agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssueAgentToken {
    /// Who asks, recorded with the token.
    pub by: String,
}

/// A per-agent token, as issued: the token itself is only ever in this
/// answer (the coordinator keeps its SHA-256).
#[derive(Clone, Serialize, Deserialize)]
pub struct IssuedAgentToken {
    pub agent: String,
    pub token_id: i64,
    pub token: String,
}

impl std::fmt::Debug for IssuedAgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedAgentToken")
            .field("agent", &self.agent)
            .field("token_id", &self.token_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `POST /api/v1/agents/{id}/revoke`: what was taken away.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRevoked {
    pub agent: String,
    /// Tokens that were valid until now.
    pub tokens_revoked: u64,
    /// Whether its Redis user existed (and its connections were closed).
    pub redis_user_deleted: bool,
}
