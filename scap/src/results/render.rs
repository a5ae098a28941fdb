//! Failing-check details as compact text for a Reflector's prompt: one line
//! per node, indented by depth, values quoted and cut short.

use std::fmt::Write;

use super::details::{CheckDetails, CriteriaNode, Field, ObjectDetails, TestDetails};
use crate::xml::floor_char_boundary;

/// A single value longer than this is cut (a whole config file as `text`
/// would crowd out everything else).
const MAX_VALUE_BYTES: usize = 256;
const TRUNCATED: &str = "\n[truncated]\n";

/// `text` cut to at most `max_bytes` on a char boundary, ending with a
/// `[truncated]` line when it was cut (and there is room for one).
pub(crate) fn cap(mut text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let keep = max_bytes.saturating_sub(TRUNCATED.len());
    let cut = floor_char_boundary(&text, keep).len();
    text.truncate(cut);
    if max_bytes >= TRUNCATED.len() {
        text.push_str(TRUNCATED);
    }
    text
}

impl CheckDetails {
    /// Writes this check's lines, starting at indent level `depth`.
    pub fn write_text(&self, out: &mut String, depth: usize) {
        indent(out, depth);
        let _ = write!(out, "definition {}", self.definition_id);
        if let Some(title) = &self.title {
            let _ = write!(out, " {title:?}");
        }
        let _ = writeln!(out, ": {}", self.result);
        if let Some(criteria) = &self.criteria {
            write_node(out, criteria, depth + 1);
        }
    }
}

fn write_node(out: &mut String, node: &CriteriaNode, depth: usize) {
    indent(out, depth);
    match node {
        CriteriaNode::Criteria {
            operator,
            negate,
            comment,
            result,
            children,
        } => {
            let _ = write!(out, "{}criteria {operator}", not(*negate));
            write_comment_and_result(out, comment, result);
            for child in children {
                write_node(out, child, depth + 1);
            }
        }
        CriteriaNode::Criterion {
            test_id,
            negate,
            comment,
            result,
            test,
        } => {
            let _ = write!(out, "{}criterion {test_id}", not(*negate));
            write_comment_and_result(out, comment, result);
            if let Some(test) = test {
                write_test(out, test, depth + 1);
            }
        }
        CriteriaNode::ExtendDefinition {
            definition_id,
            negate,
            comment,
            result,
            criteria,
        } => {
            let _ = write!(out, "{}extend {definition_id}", not(*negate));
            write_comment_and_result(out, comment, result);
            if let Some(criteria) = criteria {
                write_node(out, criteria, depth + 1);
            }
        }
    }
}

fn write_test(out: &mut String, test: &TestDetails, depth: usize) {
    indent(out, depth);
    let _ = write!(
        out,
        "test {}",
        if test.kind.is_empty() {
            "?"
        } else {
            &test.kind
        }
    );
    if let Some(check) = &test.check {
        let _ = write!(out, " check={check}");
    }
    if let Some(existence) = &test.check_existence {
        let _ = write!(out, " check_existence={existence}");
    }
    let _ = writeln!(out, ": {}", test.result);
    if let Some(object) = &test.object {
        write_object(out, object, depth);
    }
    for state in &test.states {
        indent(out, depth);
        let _ = write!(out, "expected {} {}:", state.id, state.kind);
        write_fields(out, &state.entities);
    }
}

fn write_object(out: &mut String, object: &ObjectDetails, depth: usize) {
    indent(out, depth);
    let _ = write!(out, "object {} {}", object.id, object.kind);
    if let Some(flag) = &object.flag {
        let _ = write!(out, " [{flag}]");
    }
    out.push(':');
    write_fields(out, &object.entities);
    for message in &object.messages {
        indent(out, depth + 1);
        let _ = writeln!(out, "message {:?}", clip(message));
    }
    for item in &object.items {
        indent(out, depth + 1);
        let _ = write!(out, "item {} {}", item.id, item.kind);
        if let Some(status) = &item.status {
            let _ = write!(out, " {status}");
        }
        if let Some(result) = &item.result {
            let _ = write!(out, " result={result}");
        }
        out.push(':');
        // What the object already says (pattern, instance, …) is noise here.
        let news: Vec<Field> = item
            .fields
            .iter()
            .filter(|f| {
                !object
                    .entities
                    .iter()
                    .any(|e| e.name == f.name && e.value == f.value)
            })
            .cloned()
            .collect();
        write_fields(out, &news);
    }
    if object.items_omitted > 0 {
        indent(out, depth + 1);
        let _ = writeln!(out, "… {} more items", object.items_omitted);
    }
}

/// ` name="value" name (operation)="value"` and a newline.
fn write_fields(out: &mut String, fields: &[Field]) {
    for field in fields {
        let _ = write!(out, " {}", field.name);
        if let Some(op) = &field.operation {
            let _ = write!(out, " ({op})");
        }
        let _ = write!(out, "={:?}", clip(&field.value));
    }
    out.push('\n');
}

fn write_comment_and_result(out: &mut String, comment: &Option<String>, result: &str) {
    if let Some(comment) = comment {
        let _ = write!(out, " {comment:?}");
    }
    let _ = writeln!(out, ": {result}");
}

fn clip(value: &str) -> String {
    let cut = floor_char_boundary(value, MAX_VALUE_BYTES);
    if cut.len() < value.len() {
        format!("{cut}…")
    } else {
        cut.to_owned()
    }
}

fn not(negate: bool) -> &'static str {
    if negate {
        "NOT "
    } else {
        ""
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(cap("short".to_owned(), 100), "short");
        let long = "é".repeat(100); // 200 bytes
        for max in [0, 5, TRUNCATED.len(), TRUNCATED.len() + 1, 50, 199] {
            let capped = cap(long.clone(), max);
            assert!(capped.len() <= max, "{max}: {}", capped.len());
        }
        assert!(cap(long.clone(), 50).ends_with(TRUNCATED));
        assert_eq!(cap(long.clone(), 200), long);
    }
}
