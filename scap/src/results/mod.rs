//! What `oscap xccdf eval` found: the XCCDF `TestResult` of an ARF report
//! (`--results-arf`) or of an XCCDF results file (`--results`), one
//! [`RuleResult`] per rule, and for the rules that failed (or could not be
//! decided) the OVAL details of the check, when the file holds the OVAL
//! results (ARF does; a bare XCCDF results file does not).
//!
//! An ARF embeds the whole source datastream (6+ MB for Debian 11); it is
//! parsed once, and the OVAL results are indexed only if some rule failed.

mod details;
mod oval;
mod render;
mod status;

use std::collections::HashMap;
use std::path::Path;

use roxmltree::Node;

pub use details::{
    CheckDetails, CriteriaNode, Field, Item, ObjectDetails, StateDetails, TestDetails, MAX_ITEMS,
};
pub use status::RuleStatus;

use crate::catalog::{short_rule_id, CheckRef, OVAL_SYSTEM};
use crate::xml::{self, attr, is_in, is_xccdf, ARF, OVAL_RESULTS};
use crate::ScapError;
use oval::OvalIndex;

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub benchmark_id: Option<String>,
    /// The profile evaluated (full id), if any.
    pub profile_id: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    rules: Vec<RuleResult>,
    /// Full and short rule id → index into `rules`.
    index: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
pub struct RuleResult {
    /// Full XCCDF id.
    pub rule_id: String,
    /// The fleet's rule name (see [`short_rule_id`]).
    pub short_id: String,
    pub status: RuleStatus,
    /// The checks the result names (for OVAL, `href` is `#<report id>` in
    /// an ARF).
    pub checks: Vec<CheckRef>,
    /// oscap's `<message>`s on the result, e.g. why it is `notchecked`.
    pub messages: Vec<String>,
    /// For `Fail`, `Error` and `Unknown`: each OVAL check's details.
    pub details: Vec<CheckDetails>,
}

impl Evaluation {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ScapError> {
        Self::parse(&xml::read(path.as_ref())?)
    }

    pub fn parse(xml: &str) -> Result<Self, ScapError> {
        let doc = xml::parse(xml)?;
        let root = doc.root_element();
        let report_list = arf_reports(root);
        let reports: HashMap<&str, Node> = report_list.iter().copied().collect();
        let test_result = report_list
            .iter()
            .map(|(_, content)| *content)
            .find(|n| is_xccdf(*n, "TestResult"))
            .or_else(|| doc.descendants().find(|n| is_xccdf(*n, "TestResult")))
            .ok_or(ScapError::NoTestResult)?;

        let mut evaluation = Evaluation {
            benchmark_id: child_attr(test_result, "benchmark", "id"),
            profile_id: child_attr(test_result, "profile", "idref"),
            start_time: attr(test_result, "start-time"),
            end_time: attr(test_result, "end-time"),
            rules: Vec::new(),
            index: HashMap::new(),
        };
        // OVAL reports by ARF report id, indexed on first use.
        let mut oval: HashMap<&str, OvalIndex> = HashMap::new();
        for node in test_result
            .children()
            .filter(|n| is_xccdf(*n, "rule-result"))
        {
            let mut rule = rule_result(node)?;
            if rule.status.has_details() {
                for check in rule.checks.iter().filter(|c| c.system == OVAL_SYSTEM) {
                    let (Some(report_id), Some(definition)) =
                        (check.href.strip_prefix('#'), &check.name)
                    else {
                        continue;
                    };
                    let Some((&id, &report)) = reports.get_key_value(report_id) else {
                        continue;
                    };
                    if !is_in(report, OVAL_RESULTS, "oval_results") {
                        continue;
                    }
                    let index = oval.entry(id).or_insert_with(|| OvalIndex::new(report));
                    rule.details.push(index.check_details(definition));
                }
            }
            let position = evaluation.rules.len();
            evaluation.index.insert(rule.rule_id.clone(), position);
            evaluation
                .index
                .entry(rule.short_id.clone())
                .or_insert(position);
            evaluation.rules.push(rule);
        }
        Ok(evaluation)
    }

    /// Every rule-result in document order, `NotSelected` ones included.
    pub fn rules(&self) -> &[RuleResult] {
        &self.rules
    }

    /// The rules oscap evaluated (all but `NotSelected`).
    pub fn evaluated(&self) -> impl Iterator<Item = &RuleResult> {
        self.rules
            .iter()
            .filter(|r| r.status != RuleStatus::NotSelected)
    }

    /// A rule's result by full or short id.
    pub fn rule(&self, id: &str) -> Option<&RuleResult> {
        self.index.get(id).map(|&i| &self.rules[i])
    }
}

impl RuleResult {
    /// The status line, oscap's messages and each check's details as text,
    /// at most `max_bytes` long (cut on a char boundary, marked
    /// `[truncated]`), for a Reflector's prompt.
    pub fn details_text(&self, max_bytes: usize) -> String {
        let mut out = format!("rule {}: {}\n", self.short_id, self.status);
        for message in &self.messages {
            out.push_str("message ");
            out.push_str(message);
            out.push('\n');
        }
        for check in &self.details {
            check.write_text(&mut out, 0);
        }
        render::cap(out, max_bytes)
    }
}

fn rule_result(node: Node) -> Result<RuleResult, ScapError> {
    let rule_id = node.attribute("idref").ok_or_else(|| ScapError::Invalid {
        what: "rule-result",
        message: "a rule-result has no idref".to_owned(),
    })?;
    let value = node
        .children()
        .find(|c| is_xccdf(*c, "result"))
        .and_then(|r| r.text())
        .unwrap_or_default()
        .trim();
    let status = RuleStatus::from_xccdf(value).ok_or_else(|| ScapError::Invalid {
        what: "rule-result",
        message: format!("{rule_id} has result {value:?}"),
    })?;
    let mut checks = Vec::new();
    for check in node.children().filter(|c| is_xccdf(*c, "check")) {
        let system = check.attribute("system").unwrap_or_default();
        for content in check
            .children()
            .filter(|c| is_xccdf(*c, "check-content-ref"))
        {
            checks.push(CheckRef {
                system: system.to_owned(),
                href: content.attribute("href").unwrap_or_default().to_owned(),
                name: attr(content, "name"),
            });
        }
    }
    Ok(RuleResult {
        short_id: short_rule_id(rule_id).to_owned(),
        rule_id: rule_id.to_owned(),
        status,
        checks,
        messages: node
            .children()
            .filter(|c| is_xccdf(*c, "message"))
            .filter_map(|m| m.text())
            .map(|t| t.trim().to_owned())
            .collect(),
        details: Vec::new(),
    })
}

/// ARF report ids and each report's content element (`TestResult`,
/// `oval_results`, …) in document order; empty when `root` is not an ARF
/// collection.
fn arf_reports<'a, 'i>(root: Node<'a, 'i>) -> Vec<(&'a str, Node<'a, 'i>)> {
    let mut reports = Vec::new();
    if !is_in(root, ARF, "asset-report-collection") {
        return reports;
    }
    for holder in root.children().filter(|n| is_in(*n, ARF, "reports")) {
        for report in holder.children().filter(|n| is_in(*n, ARF, "report")) {
            let content = report
                .children()
                .find(|n| is_in(*n, ARF, "content"))
                .and_then(|c| c.children().find(|n| n.is_element()));
            if let (Some(id), Some(content)) = (report.attribute("id"), content) {
                reports.push((id, content));
            }
        }
    }
    reports
}

fn child_attr(node: Node, local: &str, attribute: &str) -> Option<String> {
    node.children()
        .find(|c| is_xccdf(*c, local))
        .and_then(|c| attr(c, attribute))
}

#[cfg(test)]
mod tests;
