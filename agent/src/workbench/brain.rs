//! The Worker: turns a prompt into a fix script.

use fleet_common::event::{EvalStatus, LessonRef};
use fleet_common::lesson::ReflectionFailure;
use fleet_common::RuleTask;

use super::BoxFuture;
use crate::error::AgentError;
use crate::remediation::Reflection;

/// What an earlier attempt of this lease came to; fed back into the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorAttempt {
    pub attempt: u32,
    pub status: EvalStatus,
    pub health_ok: bool,
    /// The Evaluator's failing-check details after this attempt.
    pub details: String,
    /// What the Reflector drew from this attempt, if anything.
    pub lesson: Option<String>,
    /// The script, when this attempt replayed the rule's verified skill
    /// from `main` (DESIGN H1) rather than a script of the brain's.
    pub skill: Option<String>,
}

/// One prompt as handed to the brain. `lessons` is exactly what the text
/// contains, because credit assignment trusts it (DESIGN E4).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub task: RuleTask,
    /// 1-based attempt this prompt is for.
    pub attempt: u32,
    pub prior: Vec<PriorAttempt>,
    pub lessons: Vec<LessonRef>,
    pub text: String,
    /// Fields of the rule's text the injection screen kept out.
    pub withheld: u32,
}

pub trait Brain: Send + Sync {
    /// Proposes a script for the prompt. `AgentError::BrainUnavailable`:
    /// the endpoint is down, the lease is handed back and the agent holds;
    /// `NoFixAvailable` escalates as `no_fix_available`; any other error as
    /// `llm_unavailable` (the brain answered, but nothing usable).
    fn propose<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<String, AgentError>>;

    /// The Reflector: one structured lesson from a failed attempt, given the
    /// rendered Reflector prompt. `Ok(None)`: this brain does not reflect
    /// (the SCAP content and the simulation have nothing to learn).
    fn reflect<'a>(
        &'a self,
        _prompt: &'a str,
    ) -> BoxFuture<'a, Result<Option<Reflection>, ReflectionFailure>> {
        Box::pin(async { Ok(None) })
    }
}
