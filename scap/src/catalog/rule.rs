//! One XCCDF Rule as the fleet sees it: what to show the Worker (title,
//! description, rationale), how oscap checks it, and whether the content
//! already carries a bash fix.

use std::collections::HashMap;

use roxmltree::Node;

use crate::xml::{attr, is_xccdf, plain_text};

/// `<fix system=…>` of a shell-script remediation.
const BASH_FIX_SYSTEM: &str = "urn:xccdf:fix:script:sh";

/// XCCDF `severity`; `Unknown` is the schema's default when it is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Severity {
    #[default]
    Unknown,
    Info,
    Low,
    Medium,
    High,
}

impl Severity {
    /// Values outside the schema read as `Unknown` rather than failing the
    /// whole catalog over one attribute.
    pub fn from_xccdf(value: &str) -> Self {
        match value {
            "info" => Self::Info,
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// A `<check-content-ref>`: which document (`href`, e.g.
/// `ssg-debian11-oval.xml`) and which definition in it (`name`) decide the
/// rule under the check `system` (the OVAL or OCIL namespace URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRef {
    pub system: String,
    pub href: String,
    pub name: Option<String>,
}

/// The OVAL check system URI.
pub const OVAL_SYSTEM: &str = "http://oval.mitre.org/XMLSchema/oval-definitions-5";

#[derive(Debug, Clone)]
pub struct Rule {
    /// Full XCCDF id, e.g. `xccdf_org.ssgproject.content_rule_package_audit_installed`.
    pub id: String,
    /// The id after `_rule_` (`package_audit_installed`): the fleet's rule name.
    pub short_id: String,
    pub title: String,
    pub description: String,
    pub rationale: String,
    pub severity: Severity,
    pub has_bash_fix: bool,
    /// Every check the rule names, OVAL and OCIL alike, in document order.
    pub checks: Vec<CheckRef>,
    /// CPE (or `#platform`) references of the rule and its enclosing groups,
    /// outermost group first.
    pub platforms: Vec<String>,
}

impl Rule {
    /// The OVAL checks only: what oscap evaluates.
    pub fn oval_checks(&self) -> impl Iterator<Item = &CheckRef> {
        self.checks.iter().filter(|c| c.system == OVAL_SYSTEM)
    }

    pub(crate) fn from_node(
        node: Node,
        id: String,
        inherited_platforms: Vec<String>,
        values: &HashMap<String, String>,
    ) -> Self {
        let mut rule = Rule {
            short_id: short_rule_id(&id).to_owned(),
            id,
            title: String::new(),
            description: String::new(),
            rationale: String::new(),
            severity: node
                .attribute("severity")
                .map(Severity::from_xccdf)
                .unwrap_or_default(),
            has_bash_fix: false,
            checks: Vec::new(),
            platforms: inherited_platforms,
        };
        for child in node.children().filter(|c| c.is_element()) {
            // The first of several language variants wins.
            if is_xccdf(child, "title") && rule.title.is_empty() {
                rule.title = plain_text(child, values);
            } else if is_xccdf(child, "description") && rule.description.is_empty() {
                rule.description = plain_text(child, values);
            } else if is_xccdf(child, "rationale") && rule.rationale.is_empty() {
                rule.rationale = plain_text(child, values);
            } else if is_xccdf(child, "fix") {
                rule.has_bash_fix |= child.attribute("system") == Some(BASH_FIX_SYSTEM);
            } else if is_xccdf(child, "platform") {
                rule.platforms.extend(attr(child, "idref"));
            } else if is_xccdf(child, "check") || is_xccdf(child, "complex-check") {
                collect_checks(child, &mut rule.checks);
            }
        }
        rule
    }
}

/// Checks of a `<check>`, or of every `<check>` under a `<complex-check>`.
fn collect_checks(node: Node, out: &mut Vec<CheckRef>) {
    for check in node.descendants().filter(|n| is_xccdf(*n, "check")) {
        let system = check.attribute("system").unwrap_or_default();
        for content in check
            .children()
            .filter(|n| is_xccdf(*n, "check-content-ref"))
        {
            out.push(CheckRef {
                system: system.to_owned(),
                href: content.attribute("href").unwrap_or_default().to_owned(),
                name: attr(content, "name"),
            });
        }
    }
}

/// `xccdf_<reverse-DNS>_rule_<name>` → `<name>`; other ids stay whole.
pub fn short_rule_id(id: &str) -> &str {
    id.strip_prefix("xccdf_")
        .and_then(|rest| rest.split_once("_rule_"))
        .map_or(id, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids() {
        assert_eq!(
            short_rule_id("xccdf_org.ssgproject.content_rule_package_audit_installed"),
            "package_audit_installed"
        );
        assert_eq!(
            short_rule_id("xccdf_org.ssgproject.content_rule_a_rule_b"),
            "a_rule_b"
        );
        assert_eq!(short_rule_id("plain_rule_id"), "plain_rule_id");
    }
}
