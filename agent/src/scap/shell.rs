//! Quoting for the few commands the agent itself composes (oscap calls).

/// `s` as one single-quoted shell word.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn single_quotes_cannot_break_out() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("x'; rm -rf /; '"), r"'x'\''; rm -rf /; '\'''");
    }
}
