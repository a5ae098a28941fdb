//! Skill replay (DESIGN H1): `skills/<rule>.sh` from the `main` a lease
//! fetched runs as attempt 1, through the same path as any attempt, before
//! the brain is asked. Only where the script comes from differs; a replay
//! shows no lessons (so it emits no `PromptAssembled` and is no evidence for
//! credit) and draws none (no Reflector).

use fleet_common::event::ScriptSource;
use fleet_knowledge::FetchedSkill;

/// A verified fix on `main` for the lease's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    pub script: String,
    /// Git blob id of `skills/<rule>.sh` on the fetched `main`.
    pub blob: String,
    /// The fetched `main` commit.
    pub commit: String,
}

impl Skill {
    /// The fetched file as a skill; `None` when it is not UTF-8 text (a
    /// script the brain could not have written and the events could not
    /// carry).
    pub fn from_fetched(f: FetchedSkill) -> Option<Skill> {
        let FetchedSkill {
            script,
            blob,
            commit,
        } = f;
        Some(Skill {
            script: String::from_utf8(script).ok()?,
            blob,
            commit,
        })
    }

    pub fn source(&self) -> ScriptSource {
        ScriptSource::Skill {
            blob: self.blob.clone(),
            commit: self.commit.clone(),
        }
    }
}

/// How a replay ended, as the `result` label of
/// `fleet_agent_skill_replays_total`. A replay cut short (lost lease,
/// budget, scanner error) has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayResult {
    /// The rule passed and the target stayed healthy: no LLM call.
    Fixed,
    /// It ran and the rule still fails (or health broke): the brain is asked.
    Failed,
    /// The script screen or a ban on `main` refused it; it never ran.
    Refused,
}

impl ReplayResult {
    pub const ALL: [ReplayResult; 3] = [Self::Fixed, Self::Failed, Self::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_skill_that_is_not_text_is_not_replayed() {
        let fetched = |script: &[u8]| FetchedSkill {
            script: script.to_vec(),
            blob: "a".repeat(40),
            commit: "b".repeat(40),
        };
        let skill = Skill::from_fetched(fetched(b"apt-get install -y -q cron\n")).unwrap();
        assert_eq!(skill.script, "apt-get install -y -q cron\n");
        assert_eq!(
            skill.source(),
            ScriptSource::Skill {
                blob: "a".repeat(40),
                commit: "b".repeat(40)
            }
        );
        assert!(Skill::from_fetched(fetched(&[0xff, 0xfe])).is_none());
    }
}
