//! The per-rule loop: Worker → target → Evaluator, within the task's
//! attempt and wall-time budgets, reverting after every failed attempt.
//!
//! It emits `AttemptStarted`, `PromptAssembled`, `ScriptProposed` and
//! `AttemptEvaluated` per attempt — and, after a failed one, the
//! Reflector's `LessonProposed` or `ReflectionFailed` — and returns the
//! outcome; the caller completes the lease.
//!
//! With a skill for the rule on `main` (DESIGN H1), attempt 1 replays it
//! instead of asking the brain: no `PromptAssembled`, no Reflector, and
//! everything from `ScriptProposed` on is the same path as any attempt. A
//! failed replay is shown to the brain's first prompt as a prior attempt. When `cancel` fires it returns at once without
//! reverting: the caller, which knows why (lost lease, shutdown), reverts.
//!
//! Every write to the target (the script's exec) first checks the lease's
//! [`LeaseFence`]: past the local deadline nothing is written and the loop
//! ends as [`Remediation::Lost`] (DESIGN L4, T2).
//!
//! A brain whose endpoint is down ends the loop as [`Remediation::Held`]
//! (no outcome, no revert here): the runner hands the lease back and holds
//! until the endpoint answers. An outage is not the rule's fault, so it
//! never escalates it.

mod guidance;
mod health;
mod prompt;
mod reflect;
mod replay;
mod screen;

use std::time::Duration;

use fleet_common::event::{AbandonReason, EvalStatus, EventBody, ScriptSource};
use fleet_common::lesson::{CandidateKind, CandidateLesson, ReflectionFailure};
use fleet_common::{EscalationReason, Outcome, RuleTask};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

pub use guidance::{Guidance, ShownBan, ShownLesson, DEFAULT_PRIOR, MAX_BANS, MAX_LESSONS};
pub use health::check as health_check;
pub use prompt::assemble as assemble_prompt;
pub use reflect::{parse_reflection, reflector_prompt, Reflection, ReflectionError};
pub use replay::{ReplayResult, Skill};
pub use screen::{screen, Refusal};

use crate::error::AgentError;
use crate::events::LeaseEvents;
pub use crate::heartbeat::LeaseFence;
use crate::metrics::AgentMetrics;
use crate::workbench::{truncate_utf8, PriorAttempt, Workbench};

/// Scripts are cut to this size: the event must stay far below the
/// ingester's limit, and the event is the record of what ran.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;

/// Upper bound on one script's run, whatever budget is left.
pub const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(300);

/// Script output kept for the Reflector.
const MAX_REFLECTED_OUTPUT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remediation {
    Finished {
        outcome: Outcome,
        attempts: u32,
    },
    /// `cancel` fired; the target may hold a half-applied fix.
    Cancelled,
    /// The lease fence refused a write to the target: the lease may be gone
    /// by Redis time. This attempt wrote nothing; the caller abandons the
    /// lease and reverts whatever an earlier attempt left.
    Lost(AbandonReason),
    /// The brain's endpoint is down (`AgentError::BrainUnavailable`) in
    /// attempt `attempts`: no outcome. The caller reverts, then hands the
    /// lease back and holds (or, with `--llm-hold false`, escalates it).
    Held {
        attempts: u32,
    },
}

/// What a lease produced for its branch of the knowledge repo: each
/// attempt's script (index 0 = attempt 1, after capping) and the candidate
/// lessons the Reflector drew. The runner writes them; the loop itself
/// knows nothing of git.
#[derive(Debug, Default)]
pub struct LeaseLog(std::sync::Mutex<LeaseRecord>);

#[derive(Debug, Default, Clone)]
pub struct LeaseRecord {
    pub scripts: Vec<String>,
    /// (attempt, candidate), in the order they were drawn.
    pub lessons: Vec<(u32, CandidateLesson)>,
}

impl LeaseLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseRecord> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_script(&self, script: &str) {
        self.lock().scripts.push(script.to_owned());
    }

    fn record_lesson(&self, attempt: u32, lesson: CandidateLesson) {
        self.lock().lessons.push((attempt, lesson));
    }

    /// Everything recorded so far.
    pub fn take(&self) -> LeaseRecord {
        std::mem::take(&mut *self.lock())
    }
}

/// Remediates `task` on `bench`. Cancellation-safe: dropping the future or
/// firing `cancel` stops it between any two awaits.
pub async fn remediate(
    task: &RuleTask,
    bench: &Workbench,
    events: &LeaseEvents,
    metrics: &AgentMetrics,
    cancel: &CancellationToken,
) -> Remediation {
    let (guidance, log) = (Guidance::default(), LeaseLog::default());
    remediate_with(task, bench, events, metrics, cancel, &guidance, &log).await
}

/// [`remediate`], showing `guidance` (lessons and bans from the knowledge
/// repo) to every prompt and recording scripts and candidates in `log`.
pub async fn remediate_with(
    task: &RuleTask,
    bench: &Workbench,
    events: &LeaseEvents,
    metrics: &AgentMetrics,
    cancel: &CancellationToken,
    guidance: &Guidance,
    log: &LeaseLog,
) -> Remediation {
    let fence = LeaseFence::unfenced();
    remediate_fenced(
        task, bench, events, metrics, cancel, guidance, None, log, &fence,
    )
    .await
}

/// [`remediate_with`], replaying `skill` (the rule's skill on `main`) as
/// attempt 1 and checking `fence` before every write to the target.
#[allow(clippy::too_many_arguments)]
pub async fn remediate_fenced(
    task: &RuleTask,
    bench: &Workbench,
    events: &LeaseEvents,
    metrics: &AgentMetrics,
    cancel: &CancellationToken,
    guidance: &Guidance,
    skill: Option<&Skill>,
    log: &LeaseLog,
    fence: &LeaseFence,
) -> Remediation {
    let wall = Duration::from_secs(u64::from(task.budgets.wall_time_s));
    let rule_loop = RuleLoop {
        task,
        bench,
        events,
        metrics,
        guidance,
        skill,
        log,
        fence,
        deadline: Instant::now() + wall,
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Remediation::Cancelled,
        r = rule_loop.run() => r,
    }
}

struct RuleLoop<'a> {
    task: &'a RuleTask,
    bench: &'a Workbench,
    events: &'a LeaseEvents,
    metrics: &'a AgentMetrics,
    guidance: &'a Guidance,
    /// Replayed as attempt 1 when present (DESIGN H1).
    skill: Option<&'a Skill>,
    log: &'a LeaseLog,
    fence: &'a LeaseFence,
    deadline: Instant,
}

/// Where an attempt's script comes from.
#[derive(Clone, Copy)]
enum Proposer<'a> {
    Brain,
    Replay(&'a Skill),
}

/// How one attempt ended.
enum Step {
    Fixed,
    Failed(Failed),
    Escalate(EscalationReason),
    /// The fence refused the write: the lease may be gone.
    Lost(AbandonReason),
    /// The brain's endpoint is down.
    Held,
}

/// Why the brain gave no script.
enum NoScript {
    Escalate(EscalationReason),
    /// The endpoint is down: hold, do not judge the rule.
    Held,
}

/// A failed attempt, with what the Reflector needs.
struct Failed {
    prior: PriorAttempt,
    script: String,
    output: String,
    /// The screen or a ban refused the script; it never ran.
    refused: bool,
    /// The script could not even be started and the target stopped
    /// answering: the target died under the agent, the script did not
    /// break it (an infrastructure failure, DESIGN D6).
    target_lost: bool,
}

fn finished(outcome: Outcome, attempts: u32) -> Remediation {
    Remediation::Finished { outcome, attempts }
}

fn escalated(reason: EscalationReason, attempts: u32) -> Remediation {
    finished(Outcome::Escalated { reason }, attempts)
}

impl RuleLoop<'_> {
    async fn run(&self) -> Remediation {
        // First look: a rule that passes (or cannot be judged) needs no fix.
        let first = match timeout_at(self.deadline, self.bench.evaluator.evaluate(self.task)).await
        {
            Err(_) => return escalated(EscalationReason::TimeBudget, 0),
            Ok(Err(e)) => {
                warn!(error = %e, "initial evaluation failed");
                return escalated(EscalationReason::ScannerError, 0);
            }
            Ok(Ok(eval)) => eval,
        };
        match first.status {
            EvalStatus::Pass => return finished(Outcome::AlreadyPassing, 0),
            EvalStatus::Fail => {}
            EvalStatus::NotApplicable => return escalated(EscalationReason::NotApplicable, 0),
            EvalStatus::Error => return escalated(EscalationReason::ScannerError, 0),
            // No automated check: a fix could never be verified.
            EvalStatus::NotChecked | EvalStatus::Informational => {
                return escalated(EscalationReason::NoFixAvailable, 0)
            }
        }

        let mut prior = Vec::new();
        let mut last_target_lost = false;
        for attempt in 1..=self.task.budgets.max_attempts {
            if Instant::now() >= self.deadline {
                return escalated(EscalationReason::TimeBudget, attempt - 1);
            }
            self.metrics.attempts.inc();
            let proposer = match (attempt, self.skill) {
                (1, Some(skill)) => Proposer::Replay(skill),
                _ => Proposer::Brain,
            };
            let replay = matches!(proposer, Proposer::Replay(_));
            let span = tracing::info_span!("attempt", attempt, replay);
            let step = timeout_at(
                self.deadline,
                self.attempt(attempt, &prior, &first.details, proposer)
                    .instrument(span),
            )
            .await;
            match step {
                Ok(Step::Fixed) => {
                    info!(attempt, replay, "rule fixed");
                    if replay {
                        self.metrics.skill_replayed(ReplayResult::Fixed);
                    }
                    return finished(Outcome::Fixed { attempt }, attempt);
                }
                Ok(Step::Failed(failed)) => {
                    // A replay showed no lessons and draws none: what failed
                    // is a verified fix, and the brain is told so instead.
                    let lesson = if replay {
                        let result = if failed.refused {
                            ReplayResult::Refused
                        } else {
                            ReplayResult::Failed
                        };
                        warn!(
                            result = result.as_str(),
                            "the skill on main did not fix the rule; asking the brain"
                        );
                        self.metrics.skill_replayed(result);
                        None
                    } else {
                        // The Reflector shares the wall-time budget.
                        match timeout_at(self.deadline, self.reflect(attempt, &failed)).await {
                            Ok(lesson) => lesson,
                            Err(_) => {
                                self.revert().await;
                                return escalated(EscalationReason::TimeBudget, attempt);
                            }
                        }
                    };
                    // A target that cannot be put back is the
                    // infrastructure failing, not the knowledge (DESIGN D6).
                    if !self.revert().await {
                        return escalated(EscalationReason::TargetError, attempt);
                    }
                    last_target_lost = failed.target_lost;
                    prior.push(PriorAttempt {
                        lesson,
                        ..failed.prior
                    });
                }
                Ok(Step::Escalate(reason)) => {
                    self.revert().await;
                    return escalated(reason, attempt);
                }
                // No revert here: the caller abandons, and reverts (L4).
                Ok(Step::Lost(reason)) => return Remediation::Lost(reason),
                // Nor here: the caller reverts as it hands the lease back.
                Ok(Step::Held) => return Remediation::Held { attempts: attempt },
                Err(_) => {
                    info!(attempt, "wall-time budget spent mid-attempt");
                    self.revert().await;
                    return escalated(EscalationReason::TimeBudget, attempt);
                }
            }
        }
        // The last attempt's failure names the reason: a script that keeps
        // breaking the target is a health problem, not a budget one; a
        // target that died under the agent is no verdict on knowledge.
        let reason = match prior.last() {
            Some(_) if last_target_lost => EscalationReason::TargetError,
            Some(p) if !p.health_ok => EscalationReason::Health,
            _ => EscalationReason::AttemptBudget,
        };
        escalated(reason, self.task.budgets.max_attempts)
    }

    /// One attempt: a script from `proposer`, then the one path every
    /// script takes (record, screen and bans, fence, exec, Evaluator,
    /// health).
    async fn attempt(
        &self,
        n: u32,
        prior: &[PriorAttempt],
        first_details: &str,
        proposer: Proposer<'_>,
    ) -> Step {
        let started = Instant::now();
        self.events.emit(n, EventBody::AttemptStarted);
        let (script, source) = match proposer {
            Proposer::Replay(skill) => {
                info!(
                    blob = skill.blob,
                    commit = skill.commit,
                    "replaying the skill on main"
                );
                (cap_script(skill.script.clone()), skill.source())
            }
            Proposer::Brain => match self.propose(n, prior, first_details).await {
                Ok(script) => (script, ScriptSource::Brain),
                Err(NoScript::Escalate(reason)) => return Step::Escalate(reason),
                Err(NoScript::Held) => return Step::Held,
            },
        };
        self.run_script(n, started, script, source).await
    }

    /// The brain's script for attempt `n`, after emitting what its prompt
    /// showed (E4).
    async fn propose(
        &self,
        n: u32,
        prior: &[PriorAttempt],
        first_details: &str,
    ) -> Result<String, NoScript> {
        // The freshest look at the failing check: after the last attempt,
        // or the first evaluation.
        let details = prior.last().map_or(first_details, |p| p.details.as_str());
        let prompt = prompt::assemble(self.task, n, prior, details, self.guidance);
        // Once per lease: its first prompt (only a replay came before).
        if prior.iter().all(|p| p.skill.is_some()) {
            let withheld = u64::from(prompt.withheld) + self.guidance.withheld as u64;
            self.metrics.text_withheld.inc_by(withheld);
        }
        self.events.emit(
            n,
            EventBody::PromptAssembled {
                lessons: prompt.lessons.clone(),
                prompt_chars: u32::try_from(prompt.text.chars().count()).unwrap_or(u32::MAX),
            },
        );
        match self.bench.brain.propose(&prompt).await {
            Ok(s) => Ok(cap_script(s)),
            Err(AgentError::NoFixAvailable) => {
                info!("the brain has no fix for this rule");
                Err(NoScript::Escalate(EscalationReason::NoFixAvailable))
            }
            Err(AgentError::BrainUnavailable(error)) => {
                warn!(error, "brain endpoint unavailable; the lease goes back");
                Err(NoScript::Held)
            }
            // The endpoint answered, but not with a usable script (a 400
            // for this prompt, a malformed answer, no script twice): the
            // one case left for `llm_unavailable`.
            Err(e) => {
                warn!(error = %e, "brain gave no usable answer");
                Err(NoScript::Escalate(EscalationReason::LlmUnavailable))
            }
        }
    }

    /// Records `script` and runs it through the screen, the bans, the
    /// fence, the target, the Evaluator and the health checks.
    async fn run_script(
        &self,
        n: u32,
        started: Instant,
        script: String,
        source: ScriptSource,
    ) -> Step {
        // A replayed skill is shown to the next prompt with its failure.
        let replayed = source.is_skill().then(|| script.clone());
        self.log.record_script(&script);
        self.events.emit(
            n,
            EventBody::ScriptProposed {
                script: script.clone(),
                source,
            },
        );

        let screened = screen::screen(&script).and_then(|()| self.guidance.check_bans(&script));
        if let Err(refusal) = screened {
            // Never run; the next prompt says why.
            warn!(rule = %refusal.rule, "script refused by the screen");
            self.metrics.scripts_refused.inc();
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.events.emit(
                n,
                EventBody::AttemptEvaluated {
                    status: EvalStatus::Error,
                    health_ok: true,
                    duration_ms,
                    health_failed: Vec::new(),
                    contained: Some(refusal.to_string()),
                    script_started_ms: None,
                },
            );
            return Step::Failed(Failed {
                prior: PriorAttempt {
                    attempt: n,
                    status: EvalStatus::Error,
                    health_ok: true,
                    details: refusal.to_string(),
                    lesson: None,
                    skill: replayed,
                },
                output: refusal.to_string(),
                script,
                refused: true,
                target_lost: false,
            });
        }

        // The fence: a zombie (paused past its TTL, then resumed) gets here
        // before its heartbeat task has run; it must not write (L4, T2).
        if let Err(reason) = self.fence.check() {
            warn!(
                ?reason,
                "lease fence: past the lease's local deadline, script not run"
            );
            return Step::Lost(reason);
        }
        let script_started_ms = unix_ms();
        let budget_left = self.deadline.saturating_duration_since(Instant::now());
        let (ran, mut output, contained, stopped) = match self
            .bench
            .target
            .exec(&script, budget_left.min(MAX_EXEC_TIMEOUT))
            .await
        {
            Ok(r) => {
                info!(exit_code = ?r.exit_code, timed_out = r.timed_out, output_bytes = r.output.len(), contained = r.contained.as_deref(), "script ran");
                let mut end = match (r.timed_out, r.exit_code) {
                    (true, _) => "[timed out]".to_owned(),
                    (false, Some(code)) => format!("[exit code {code}]"),
                    (false, None) => "[no exit code]".to_owned(),
                };
                if let Some(reason) = &r.contained {
                    self.metrics.scripts_contained.inc();
                    end = format!("[sandbox: {reason}]\n{end}");
                }
                // The end marker must survive the cut for the Reflector.
                let mut text = r.output.trim_end().to_owned();
                truncate_utf8(
                    &mut text,
                    MAX_REFLECTED_OUTPUT.saturating_sub(end.len() + 1),
                );
                // Stopped by a limit (OOM kill, pid limit, container
                // killed) rather than cut off at its timeout.
                let stopped = r.contained.is_some() && !r.timed_out;
                (true, format!("{text}\n{end}"), r.contained, stopped)
            }
            Err(e) => {
                // A failed exec is a failed attempt; the revert that follows
                // decides whether the target is still usable.
                warn!(error = %e, "script could not run on the target");
                (
                    false,
                    format!("[the script could not run: {e}]"),
                    None,
                    false,
                )
            }
        };
        crate::workbench::truncate_utf8(&mut output, MAX_REFLECTED_OUTPUT);
        // A script a limit stopped did not run as written: there is nothing
        // to judge, and a wrecked container would pass for a scanner error.
        let eval = if ran && !stopped {
            Some(self.bench.evaluator.evaluate(self.task).await)
        } else {
            None
        };
        let health = health::check(self.bench.target.as_ref(), &self.task.checks.health).await;
        let health_ok = health.ok();
        let target_lost = !ran && health.failed.iter().any(|c| c == health::UNRESPONSIVE);
        let (status, scanner_failed, details) = match eval {
            Some(Ok(eval)) => (eval.status, false, eval.details),
            Some(Err(e)) => {
                warn!(error = %e, "evaluation failed");
                (EvalStatus::Error, true, String::new())
            }
            None => (EvalStatus::Error, false, String::new()),
        };
        // The next prompt says why the script did not get its way.
        let details = match &contained {
            Some(reason) => {
                format!("The target's sandbox stopped the script: {reason}.\n{details}")
            }
            None => details,
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.metrics
            .attempt_duration
            .observe(started.elapsed().as_secs_f64());
        self.events.emit(
            n,
            EventBody::AttemptEvaluated {
                status,
                health_ok,
                duration_ms,
                health_failed: health.failed,
                contained,
                script_started_ms: Some(script_started_ms),
            },
        );
        info!(?status, health_ok, duration_ms, "attempt evaluated");
        if scanner_failed {
            Step::Escalate(EscalationReason::ScannerError)
        } else if status == EvalStatus::Pass && health_ok {
            Step::Fixed
        } else {
            Step::Failed(Failed {
                prior: PriorAttempt {
                    attempt: n,
                    status,
                    health_ok,
                    details,
                    lesson: None,
                    skill: replayed,
                },
                script,
                output,
                refused: false,
                target_lost,
            })
        }
    }

    /// Asks the Reflector about a failed attempt; records and emits what it
    /// drew. Returns the lesson's text for the next prompt. Never fails the
    /// lease: no lesson is a recorded outcome like any other.
    async fn reflect(&self, n: u32, failed: &Failed) -> Option<String> {
        let prompt = reflect::reflector_prompt(
            self.task,
            &failed.script,
            &failed.output,
            &failed.prior.details,
        );
        let reflection = match self.bench.brain.reflect(&prompt).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(reason) => {
                warn!(reason = reason.as_str(), "no lesson from the Reflector");
                self.metrics.reflection_failed(reason);
                self.events.emit(n, EventBody::ReflectionFailed { reason });
                return None;
            }
        };
        // Untrusted text bound for the knowledge repo and later prompts.
        let screened = fleet_common::injection::screen(&reflection.lesson).and_then(|()| {
            reflection
                .ban
                .as_deref()
                .map_or(Ok(()), fleet_common::injection::screen)
        });
        if let Err(finding) = screened {
            let reason = ReflectionFailure::ReflectorHostile;
            warn!(
                rule = finding.rule,
                "the Reflector's lesson reads like instructions; dropped"
            );
            self.metrics.reflection_failed(reason);
            self.events.emit(n, EventBody::ReflectionFailed { reason });
            return None;
        }
        let (run, epoch) = (self.task.run.0, self.events.lease().epoch.0);
        let lesson = CandidateLesson {
            id: CandidateLesson::id_for(&self.task.rule, run, epoch, n, false),
            kind: CandidateKind::Lesson,
            family: self.task.family.clone(),
            scope: reflection.scope,
            text: reflection.lesson.clone(),
            pattern: None,
        };
        let ban = reflection.ban.map(|pattern| CandidateLesson {
            id: CandidateLesson::id_for(&self.task.rule, run, epoch, n, true),
            kind: CandidateKind::Ban,
            pattern: Some(pattern),
            ..lesson.clone()
        });
        info!(
            lesson = lesson.id,
            ban = ban.is_some(),
            "the Reflector drew a lesson"
        );
        self.metrics.lessons_proposed.inc();
        for candidate in std::iter::once(lesson).chain(ban) {
            self.log.record_lesson(n, candidate.clone());
            self.events
                .emit(n, EventBody::LessonProposed { lesson: candidate });
        }
        Some(reflection.lesson)
    }

    /// False when the target could not be returned to its baseline.
    async fn revert(&self) -> bool {
        match self.bench.target.revert().await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "revert failed");
                false
            }
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Cuts a script to [`MAX_SCRIPT_BYTES`] on a char boundary.
pub fn cap_script(mut script: String) -> String {
    let bytes = script.len();
    if truncate_utf8(&mut script, MAX_SCRIPT_BYTES) {
        warn!(bytes, kept = script.len(), "script truncated");
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_scripts_are_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_SCRIPT_BYTES);
        let cut = cap_script(s);
        assert!(cut.len() <= MAX_SCRIPT_BYTES && cut.len() >= MAX_SCRIPT_BYTES - 1);
        assert_eq!(cap_script("echo hi".into()), "echo hi");
    }
}
