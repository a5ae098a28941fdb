//! What the catalog and the results share: parse options, namespaces, and
//! turning XCCDF's XHTML prose into plain text.

use std::collections::HashMap;
use std::path::Path;

use roxmltree::{Document, Node, NodeType, ParsingOptions};

use crate::ScapError;

pub(crate) const XCCDF_1_2: &str = "http://checklists.nist.gov/xccdf/1.2";
pub(crate) const XCCDF_1_1: &str = "http://checklists.nist.gov/xccdf/1.1";
pub(crate) const OVAL_RESULTS: &str = "http://oval.mitre.org/XMLSchema/oval-results-5";
pub(crate) const OVAL_DEFINITIONS: &str = "http://oval.mitre.org/XMLSchema/oval-definitions-5";
pub(crate) const OVAL_SYSCHAR: &str =
    "http://oval.mitre.org/XMLSchema/oval-system-characteristics-5";
pub(crate) const ARF: &str = "http://scap.nist.gov/schema/asset-reporting-format/1.1";

/// Nesting deeper than this in prose is hostile, not content: ignored.
const MAX_TEXT_DEPTH: usize = 64;

/// Parse with roxmltree's defaults plus a node cap: DTDs are refused (SCAP
/// content has none, and entity expansion is the classic XML bomb), and the
/// cap bounds memory on garbage. The RHEL 9 datastream has ~1.5 M nodes.
pub(crate) fn parse(xml: &str) -> Result<Document<'_>, ScapError> {
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: 50_000_000,
        ..ParsingOptions::default()
    };
    Ok(Document::parse_with_options(xml, options)?)
}

pub(crate) fn read(path: &Path) -> Result<String, ScapError> {
    std::fs::read_to_string(path).map_err(|source| ScapError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// An XCCDF element (1.2, or 1.1 inside older datastreams) named `local`.
pub(crate) fn is_xccdf(node: Node, local: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == local
        && matches!(node.tag_name().namespace(), Some(XCCDF_1_2 | XCCDF_1_1))
}

/// An element named `local` whose namespace is `ns` or one of its `#family`
/// extensions (OVAL puts tests, objects and items in e.g. `…-5#independent`).
pub(crate) fn is_in(node: Node, ns: &str, local: &str) -> bool {
    node.is_element() && node.tag_name().name() == local && ns_matches(node, ns)
}

pub(crate) fn ns_matches(node: Node, ns: &str) -> bool {
    match node.tag_name().namespace() {
        Some(n) => n == ns || n.strip_prefix(ns).is_some_and(|rest| rest.starts_with('#')),
        None => false,
    }
}

pub(crate) fn attr(node: Node, name: &str) -> Option<String> {
    node.attribute(name).map(str::to_owned)
}

/// XML Schema boolean.
pub(crate) fn boolean(value: &str, what: &'static str) -> Result<bool, ScapError> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ScapError::Invalid {
            what,
            message: format!("{other:?} is not a boolean"),
        }),
    }
}

/// Readable text of mixed XHTML content: markup dropped (code kept as its
/// text), block elements separated by a space, whitespace collapsed, and
/// `<xccdf:sub idref=…/>` replaced by the value it names (`values`: Value id
/// to default) or else by the idref itself.
pub(crate) fn plain_text(node: Node, values: &HashMap<String, String>) -> String {
    let mut raw = String::new();
    push_text(node, values, &mut raw, 0);
    collapse_whitespace(&raw)
}

fn push_text(node: Node, values: &HashMap<String, String>, out: &mut String, depth: usize) {
    if depth > MAX_TEXT_DEPTH {
        return;
    }
    for child in node.children() {
        match child.node_type() {
            NodeType::Text => out.push_str(child.text().unwrap_or_default()),
            NodeType::Element if is_xccdf(child, "sub") => {
                let idref = child.attribute("idref").unwrap_or_default();
                out.push_str(values.get(idref).map(String::as_str).unwrap_or(idref));
            }
            NodeType::Element => {
                let block = is_block(child.tag_name().name());
                if block {
                    out.push(' ');
                }
                push_text(child, values, out, depth + 1);
                if block {
                    out.push(' ');
                }
            }
            _ => {}
        }
    }
}

fn is_block(local: &str) -> bool {
    matches!(
        local,
        "p" | "br"
            | "div"
            | "pre"
            | "ul"
            | "ol"
            | "li"
            | "dl"
            | "dt"
            | "dd"
            | "table"
            | "tr"
            | "td"
            | "th"
            | "blockquote"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
    )
}

pub(crate) fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
pub(crate) fn floor_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xhtml_becomes_plain_text() {
        let xml = r#"<d xmlns="http://checklists.nist.gov/xccdf/1.2" xmlns:h="http://www.w3.org/1999/xhtml">To check, run:
  <h:pre>$ grep <h:code>PermitRootLogin</h:code> /etc/ssh/sshd_config</h:pre>Set it to <sub idref="v"/> or <sub idref="missing"/>.<h:br/>Done&amp;dusted</d>"#;
        let doc = parse(xml).unwrap();
        let values = HashMap::from([("v".to_owned(), "no".to_owned())]);
        assert_eq!(
            plain_text(doc.root_element(), &values),
            "To check, run: $ grep PermitRootLogin /etc/ssh/sshd_config Set it to no or missing. Done&dusted"
        );
    }

    #[test]
    fn cut_lands_on_a_char_boundary() {
        assert_eq!(floor_char_boundary("aé", 2), "a");
        assert_eq!(floor_char_boundary("aé", 3), "aé");
        assert_eq!(floor_char_boundary("", 0), "");
    }

    #[test]
    fn dtd_is_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><l>&b;</l>"#;
        assert!(matches!(parse(bomb), Err(ScapError::Xml(_))));
    }

    #[test]
    fn oval_family_namespaces_match() {
        let doc =
            parse(r#"<a xmlns="http://oval.mitre.org/XMLSchema/oval-definitions-5#independent"/>"#)
                .unwrap();
        assert!(ns_matches(doc.root_element(), OVAL_DEFINITIONS));
        let doc =
            parse(r#"<a xmlns="http://oval.mitre.org/XMLSchema/oval-definitions-5x"/>"#).unwrap();
        assert!(!ns_matches(doc.root_element(), OVAL_DEFINITIONS));
    }
}
