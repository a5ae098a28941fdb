//! The Reflector: after a failed attempt, one structured lesson — text, an
//! optional ban pattern, a scope — asked of the brain with the skill pack's
//! Reflector template. The answer is untrusted text: it is parsed strictly
//! here, and whatever does not parse is asked again once by the brain, then
//! recorded as `reflector_unparseable`.

use fleet_common::lesson::{LessonScope, MAX_BAN_PATTERN_CHARS, MAX_LESSON_CHARS};
use fleet_common::RuleTask;
use serde::Deserialize;
use thiserror::Error;

use super::prompt::render;

/// Used when the pack ships no Reflector template.
const BUILT_IN: &str = "A fix script for the SCAP rule {{rule_id}} ({{title}}) did not make the rule pass.
Explain the mistake as one reusable lesson for this rule family ({{family}}).

Script:
```bash
{{script}}
```

Script output (capped):
{{output}}

Evaluation after the script:
{{check_details}}

Answer with JSON only:
{\"lesson\": \"<one or two sentences, imperative>\", \"ban\": \"<optional regex of a command that must never be used again, or null>\", \"scope\": \"rule\" | \"family\"}";

/// Output and check details are cut here in the Reflector prompt.
const MAX_CONTEXT_BYTES: usize = 4096;

/// What the Reflector learned from one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflection {
    pub lesson: String,
    pub ban: Option<String>,
    pub scope: LessonScope,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReflectionError {
    #[error("the answer holds no JSON object")]
    NoJson,
    #[error("the JSON is not a lesson: {0}")]
    Shape(String),
    #[error("the lesson is empty")]
    EmptyLesson,
    #[error("the lesson is longer than {MAX_LESSON_CHARS} characters")]
    LongLesson,
    #[error(
        "the ban is not a usable regular expression of at most {MAX_BAN_PATTERN_CHARS} characters"
    )]
    BadBan,
    #[error("scope must be \"rule\" or \"family\", not {0:?}")]
    BadScope(String),
}

/// The Reflector prompt for a failed attempt.
pub fn reflector_prompt(
    task: &RuleTask,
    script: &str,
    output: &str,
    check_details: &str,
) -> String {
    let template = task.checks.reflector_prompt.as_deref().unwrap_or(BUILT_IN);
    let title = task
        .rule_text
        .as_ref()
        .map(|t| t.title.clone())
        .unwrap_or_default();
    let cap = |s: &str| {
        let mut s = s.to_owned();
        crate::workbench::truncate_utf8(&mut s, MAX_CONTEXT_BYTES);
        if s.trim().is_empty() {
            "(none)".to_owned()
        } else {
            s
        }
    };
    let fields: [(&str, String); 6] = [
        ("rule_id", task.rule.clone()),
        ("title", title),
        ("family", task.family.clone()),
        ("script", script.trim_end().to_owned()),
        ("output", cap(output)),
        ("check_details", cap(check_details)),
    ];
    render(template, &fields)
}

#[derive(Deserialize)]
struct Wire {
    lesson: Option<String>,
    #[serde(default)]
    ban: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// Parses a Reflector answer: a JSON object, bare or in a fence, possibly
/// with prose around it. Unknown fields are ignored (models add some).
pub fn parse_reflection(answer: &str) -> Result<Reflection, ReflectionError> {
    let json = json_object(answer).ok_or(ReflectionError::NoJson)?;
    let wire: Wire =
        serde_json::from_str(json).map_err(|e| ReflectionError::Shape(e.to_string()))?;
    let lesson = wire.lesson.unwrap_or_default().trim().to_owned();
    if lesson.is_empty() {
        return Err(ReflectionError::EmptyLesson);
    }
    if lesson.chars().count() > MAX_LESSON_CHARS {
        return Err(ReflectionError::LongLesson);
    }
    let ban = match wire.ban.map(|b| b.trim().to_owned()) {
        None => None,
        Some(b) if b.is_empty() || b == "null" => None,
        Some(b) => {
            let usable = b.chars().count() <= MAX_BAN_PATTERN_CHARS
                && fleet_common::script_screen::compile_ban(&b).is_ok();
            if !usable {
                return Err(ReflectionError::BadBan);
            }
            Some(b)
        }
    };
    let scope = match wire.scope.as_deref().map(str::trim) {
        None | Some("rule") => LessonScope::Rule,
        Some("family") => LessonScope::Family,
        Some(other) => return Err(ReflectionError::BadScope(other.chars().take(40).collect())),
    };
    Ok(Reflection { lesson, ban, scope })
}

/// The outermost `{…}` of the answer.
fn json_object(answer: &str) -> Option<&str> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    (end > start).then(|| &answer[start..=end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_fenced_and_wrapped_answers_parse() {
        let want = Reflection {
            lesson: "Install the package with apt-get.".into(),
            ban: None,
            scope: LessonScope::Family,
        };
        for a in [
            r#"{"lesson": "Install the package with apt-get.", "ban": null, "scope": "family"}"#,
            "```json\n{\"lesson\": \"Install the package with apt-get.\", \"scope\": \"family\", \"confidence\": 0.9}\n```",
            "Sure! Here it is: {\"lesson\":\" Install the package with apt-get. \",\"ban\":\"\",\"scope\":\"family\"} Hope it helps.",
        ] {
            assert_eq!(parse_reflection(a), Ok(want.clone()), "{a}");
        }
        let r = parse_reflection(r#"{"lesson": "x", "ban": "sysctl\\s+-p"}"#).unwrap();
        assert_eq!(r.ban.as_deref(), Some(r"sysctl\s+-p"));
        assert_eq!(r.scope, LessonScope::Rule, "scope defaults to the rule");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let long = format!(r#"{{"lesson": "{}"}}"#, "x".repeat(MAX_LESSON_CHARS + 1));
        let cases = [
            ("", ReflectionError::NoJson),
            ("I think the script was wrong.", ReflectionError::NoJson),
            ("} {", ReflectionError::NoJson),
            (r#"{"lesson": ""}"#, ReflectionError::EmptyLesson),
            (r#"{"ban": "rm"}"#, ReflectionError::EmptyLesson),
            (long.as_str(), ReflectionError::LongLesson),
            (r#"{"lesson": "x", "ban": "("}"#, ReflectionError::BadBan),
            (
                r#"{"lesson": "x", "scope": "everything"}"#,
                ReflectionError::BadScope("everything".into()),
            ),
        ];
        for (a, want) in cases {
            assert_eq!(parse_reflection(a), Err(want), "{a}");
        }
        assert!(matches!(
            parse_reflection(r#"{"lesson": 3}"#),
            Err(ReflectionError::Shape(_))
        ));
        assert!(matches!(
            parse_reflection("{not json}"),
            Err(ReflectionError::Shape(_))
        ));
    }
}
