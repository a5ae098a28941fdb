//! Candidate lessons: what the Reflector learned from one failed attempt.
//!
//! A candidate travels twice: as a `LessonProposed` event (Postgres keeps
//! it for the dream stage) and as a file on the lease's branch of the
//! knowledge repo. It reaches prompts only after the dream stage accepts it
//! onto `main` (DESIGN D3).

use serde::{Deserialize, Serialize};

/// Longest lesson text kept; a Reflector that writes more is rambling.
pub const MAX_LESSON_CHARS: usize = 1000;
/// Longest ban pattern kept.
pub const MAX_BAN_PATTERN_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateKind {
    Lesson,
    Ban,
}

impl CandidateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lesson => "lesson",
            Self::Ban => "ban",
        }
    }
}

/// Which rules a lesson is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LessonScope {
    /// Only the rule it was learned on.
    Rule,
    /// Every rule of the rule's family.
    Family,
}

impl LessonScope {
    /// The `scope` front-matter value of a lesson file: `family` or
    /// `rule:<rule id>`.
    pub fn render(self, rule: &str) -> String {
        match self {
            Self::Family => "family".to_owned(),
            Self::Rule => format!("rule:{rule}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateLesson {
    /// Unique and deterministic: `<rule>-r<run>-e<epoch>-a<attempt>`, plus
    /// `-ban` for the ban, so a redelivered event names the same lesson.
    pub id: String,
    pub kind: CandidateKind,
    pub family: String,
    pub scope: LessonScope,
    pub text: String,
    /// Bans only: the regular expression scripts must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

impl CandidateLesson {
    /// The id of the lesson (or, with `ban`, of the ban) learned from
    /// `attempt` of the lease `epoch` of `rule` in `run`.
    pub fn id_for(rule: &str, run: i64, epoch: u64, attempt: u32, ban: bool) -> String {
        // Ids end up in file names and refs: keep the rule's safe characters.
        let rule: String = rule
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(80)
            .collect();
        let suffix = if ban { "-ban" } else { "" };
        format!("{rule}-r{run}-e{epoch}-a{attempt}{suffix}")
    }
}

/// Why an attempt's reflection yielded no lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReflectionFailure {
    /// Two answers in a row were not the structured lesson asked for.
    ReflectorUnparseable,
    /// The endpoint could not be reached or kept failing.
    ReflectorUnavailable,
    /// The lesson read like instructions to a model (DESIGN D7): dropped.
    ReflectorHostile,
}

impl ReflectionFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReflectorUnparseable => "reflector_unparseable",
            Self::ReflectorUnavailable => "reflector_unavailable",
            Self::ReflectorHostile => "reflector_hostile",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_path_safe() {
        assert_eq!(
            CandidateLesson::id_for("package_cron_installed", 7, 3, 2, false),
            "package_cron_installed-r7-e3-a2"
        );
        assert_eq!(
            CandidateLesson::id_for("a/../b c", 1, 1, 1, true),
            "a____b_c-r1-e1-a1-ban"
        );
        assert_eq!(LessonScope::Rule.render("x"), "rule:x");
    }
}
