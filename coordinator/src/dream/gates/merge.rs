//! Near-duplicates merge (DESIGN D7): a lesson or ban close to one already
//! accepted adds to it what it says that the accepted text lacks — its
//! sentences (and lines) whose word 2-shingles are mostly new — in its
//! order, while the text stays within [`MAX_TEXT_CHARS`]. A candidate that
//! adds nothing leaves the text as it is (only the provenance changes).
//! Pure: the same two texts always merge the same way.

use std::collections::HashSet;

use serde::Serialize;

use super::text::{normalized_words, sentences, shingles};
use super::{MAX_TEXT_CHARS, NEAR_DUPLICATE_JACCARD};

/// The merged text and what went into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergedText {
    pub text: String,
    /// The candidate's sentences added, in order.
    pub added: Vec<String>,
    /// New sentences left out because the text would exceed the limit.
    pub left_out: usize,
}

/// `existing` with what `candidate` adds to it.
pub fn merge_text(existing: &str, candidate: &str) -> MergedText {
    let mut text = existing.trim_end().to_owned();
    let mut known: HashSet<String> = shingles(&normalized_words(existing));
    let mut added = Vec::new();
    let mut left_out = 0;
    for (sentence, starts_line) in units(candidate) {
        let words = normalized_words(sentence);
        if words.is_empty() {
            continue;
        }
        let mine = shingles(&words);
        let said = mine.intersection(&known).count() as f64 / mine.len() as f64;
        if said >= NEAR_DUPLICATE_JACCARD {
            continue;
        }
        // The first addition starts a line; the rest keep the candidate's
        // line breaks.
        let separator = if added.is_empty() || starts_line {
            "\n"
        } else {
            " "
        };
        let grown = text.chars().count() + separator.len() + sentence.chars().count();
        if grown > MAX_TEXT_CHARS {
            left_out += 1;
            continue;
        }
        text.push_str(separator);
        text.push_str(sentence);
        known.extend(mine);
        added.push(sentence.to_owned());
    }
    MergedText {
        text,
        added,
        left_out,
    }
}

/// The candidate's sentences, each with whether it starts a line.
fn units(text: &str) -> Vec<(&str, bool)> {
    text.lines()
        .flat_map(|line| {
            sentences(line)
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s, i == 0))
        })
        .collect()
}

#[cfg(test)]
mod tests;
