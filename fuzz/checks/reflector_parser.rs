//! The Reflector's answer parser on any text: never a panic; a parsed
//! lesson is trimmed, non-empty and within the limits, its ban compiles the
//! way agents enforce bans, and the same answer always parses the same.

use fleet_agent::remediation::{parse_reflection, ReflectionError};
use fleet_common::lesson::{MAX_BAN_PATTERN_CHARS, MAX_LESSON_CHARS};
use fleet_common::script_screen::compile_ban;

pub fn check(data: &[u8]) {
    let Ok(answer) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_reflection(answer);
    assert_eq!(parse_reflection(answer), parsed, "parsing is deterministic");
    match parsed {
        Ok(reflection) => {
            let lesson = &reflection.lesson;
            assert!(!lesson.is_empty() && lesson.trim() == lesson);
            assert!(lesson.chars().count() <= MAX_LESSON_CHARS);
            assert!(answer.contains('{') && answer.contains('}'));
            if let Some(ban) = &reflection.ban {
                assert!(!ban.is_empty() && ban != "null" && ban.trim() == ban);
                assert!(ban.chars().count() <= MAX_BAN_PATTERN_CHARS);
                assert!(compile_ban(ban).is_ok(), "an accepted ban compiles");
            }
        }
        Err(ReflectionError::NoJson) => {
            let object = answer
                .find('{')
                .zip(answer.rfind('}'))
                .is_some_and(|(start, end)| end > start);
            assert!(!object, "NoJson only without a `{{…}}`");
        }
        Err(ReflectionError::BadScope(scope)) => assert!(scope.chars().count() <= 40),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}
