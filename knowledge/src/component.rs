//! Path components that may appear in refs, file names and worktree names.

use crate::KnowledgeError;

/// The longest component we accept.
pub const MAX_COMPONENT_LEN: usize = 128;

/// Accept `[A-Za-z0-9._-]{1,128}` except `.`/`..` and names starting with `.`
/// or ending in `.lock` (which git refuses in ref names).
pub fn validate_component<'a>(
    what: &'static str,
    value: &'a str,
) -> Result<&'a str, KnowledgeError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_COMPONENT_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !value.starts_with('.')
        && !value.ends_with(".lock")
        && !value.ends_with('.')
        && !value.contains("..");
    if ok {
        Ok(value)
    } else {
        Err(KnowledgeError::InvalidComponent {
            what,
            value: value.chars().take(MAX_COMPONENT_LEN + 8).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::validate_component;

    #[test]
    fn accepts_plain_names_and_rejects_hostile_ones() {
        for ok in [
            "a",
            "xccdf_org.ssgproject.content_rule_x",
            "R-1_2.3",
            &"a".repeat(128),
        ] {
            assert!(validate_component("t", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "x.lock",
            "a..b",
            "a b",
            "é",
            "a\0b",
            "a:b",
            "x*",
            &"a".repeat(129),
            "trailing.",
        ] {
            assert!(validate_component("t", bad).is_err(), "{bad:?}");
        }
    }
}
