//! The trailers the dream stage puts on the commits it makes on `main`
//! (`Fleet-Action`, `Fleet-Run`, `Fleet-Ledger`), so that what a file on
//! `main` came from can be read back from git alone (DESIGN H2: a bundle
//! is a function of `main`). Parsed with libgit2's trailer parser, the
//! same rules as `git interpret-trailers`.

/// `Fleet-Action: promote|merge|revert`.
pub const ACTION: &str = "Fleet-Action";
/// `Fleet-Run: <run id>`: the run whose candidate was promoted, or whose
/// regression caused a revert.
pub const RUN: &str = "Fleet-Run";
/// `Fleet-Ledger: <promotion ledger id>`: the entry that wrote the commit.
pub const LEDGER: &str = "Fleet-Ledger";

/// What a dream commit did to the file it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DreamAction {
    /// APPLY, or an operator's approval of an escalation.
    Promote,
    /// D7: a near-duplicate merged into the lesson already at that path.
    Merge,
    /// D8: the file went back to what it was before a promotion.
    Revert,
}

impl DreamAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Merge => "merge",
            Self::Revert => "revert",
        }
    }
}

/// The trailers of one commit on `main`; every field is `None` on commits
/// that do not carry it (the first commit, tests, older dream commits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DreamTrailers {
    pub action: Option<DreamAction>,
    pub run: Option<i64>,
    pub ledger: Option<i64>,
}

impl DreamTrailers {
    pub fn new(action: DreamAction, run: i64, ledger: i64) -> Self {
        Self {
            action: Some(action),
            run: Some(run),
            ledger: Some(ledger),
        }
    }

    /// `subject` followed by a blank line and the trailer block.
    pub fn message(&self, subject: &str) -> String {
        let mut out = format!("{}\n\n", subject.trim_end());
        if let Some(a) = self.action {
            out.push_str(&format!("{ACTION}: {}\n", a.as_str()));
        }
        if let Some(r) = self.run {
            out.push_str(&format!("{RUN}: {r}\n"));
        }
        if let Some(l) = self.ledger {
            out.push_str(&format!("{LEDGER}: {l}\n"));
        }
        out
    }

    /// The trailers of a commit message; unknown trailers and values that
    /// do not parse are ignored (the first of each key counts).
    pub fn parse(message: &str) -> Self {
        let mut out = Self::default();
        let Ok(trailers) = git2::message_trailers_strs(message) else {
            return out;
        };
        for (key, value) in trailers.iter() {
            let value = value.trim();
            if key.eq_ignore_ascii_case(ACTION) && out.action.is_none() {
                out.action = match value {
                    "promote" => Some(DreamAction::Promote),
                    "merge" => Some(DreamAction::Merge),
                    "revert" => Some(DreamAction::Revert),
                    _ => None,
                };
            } else if key.eq_ignore_ascii_case(RUN) && out.run.is_none() {
                out.run = value.parse().ok();
            } else if key.eq_ignore_ascii_case(LEDGER) && out.ledger.is_none() {
                out.ledger = value.parse().ok();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_round_trip_through_a_commit_message() {
        let t = DreamTrailers::new(DreamAction::Promote, 12, 345);
        let message = t.message("dream: promote skill x (ledger #345, run 12)");
        assert!(message.ends_with("\n\nFleet-Action: promote\nFleet-Run: 12\nFleet-Ledger: 345\n"));
        assert_eq!(DreamTrailers::parse(&message), t);
        for action in [DreamAction::Merge, DreamAction::Revert] {
            let t = DreamTrailers::new(action, 13, 400);
            assert_eq!(DreamTrailers::parse(&t.message("dream: x")), t);
        }
    }

    #[test]
    fn messages_without_trailers_or_with_garbage_give_nothing() {
        assert_eq!(DreamTrailers::parse("init"), DreamTrailers::default());
        // A trailer-looking line in the subject is not a trailer block.
        assert_eq!(
            DreamTrailers::parse("Fleet-Run: 3"),
            DreamTrailers::default()
        );
        let odd = DreamTrailers::parse("s\n\nFleet-Run: twelve\nFleet-Ledger: 7\nOther: x\n");
        assert_eq!(odd.run, None);
        assert_eq!(odd.ledger, Some(7));
        assert_eq!(odd.action, None);
    }
}
