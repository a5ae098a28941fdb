//! The rule catalog of a SCAP source datastream (or a bare XCCDF file): its
//! profiles, its rules, and which rules each profile selects.
//!
//! Owned data: the XML document is dropped once parsed, so a catalog can be
//! kept for the life of an agent.

mod profile;
mod rule;
mod selection;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use roxmltree::{Node, NodeId};

pub use profile::Profile;
pub use rule::{short_rule_id, CheckRef, Rule, Severity, OVAL_SYSTEM};
pub use selection::Select;
use selection::{Dependencies, ItemTree};

use crate::xml::{self, attr, boolean, is_xccdf};
use crate::ScapError;

#[derive(Debug, Clone)]
pub struct Catalog {
    benchmark_id: String,
    profiles: Vec<Profile>,
    rules: Vec<Rule>,
    /// Full and short rule id → index into `rules`.
    rule_index: HashMap<String, usize>,
    tree: ItemTree,
}

impl Catalog {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ScapError> {
        Self::parse(&xml::read(path.as_ref())?)
    }

    /// Parse the first XCCDF Benchmark in `xml`: the checklist component of
    /// a datastream, or the root of an XCCDF file. Rules inherit the
    /// platforms of their groups; `<sub>` in prose shows a Value's default.
    pub fn parse(xml: &str) -> Result<Self, ScapError> {
        let doc = xml::parse(xml)?;
        let benchmark = doc
            .descendants()
            .find(|n| is_xccdf(*n, "Benchmark"))
            .ok_or(ScapError::NoBenchmark)?;
        let values = default_values(benchmark);
        let mut catalog = Catalog {
            benchmark_id: attr(benchmark, "id").unwrap_or_default(),
            profiles: Vec::new(),
            rules: Vec::new(),
            rule_index: HashMap::new(),
            tree: ItemTree::default(),
        };
        // A group's item index and the platforms its members inherit.
        let mut groups: HashMap<NodeId, (usize, Vec<String>)> = HashMap::new();
        for node in benchmark.descendants() {
            let is_group = is_xccdf(node, "Group");
            if is_xccdf(node, "Profile") && node.parent() == Some(benchmark) {
                catalog.profiles.push(Profile::from_node(node, &values)?);
                continue;
            }
            if !is_group && !is_xccdf(node, "Rule") {
                continue;
            }
            // Groups and rules are children of the benchmark or of a group;
            // anything else (an extension's payload) is not selectable.
            let Some(parent) = node.parent() else {
                continue;
            };
            let (parent_index, mut platforms) = if parent == benchmark {
                (None, Vec::new())
            } else if let Some((index, platforms)) = groups.get(&parent.id()) {
                (Some(*index), platforms.clone())
            } else {
                continue;
            };
            let id = node.attribute("id").ok_or_else(|| ScapError::Invalid {
                what: "benchmark",
                message: "a group or rule has no id".to_owned(),
            })?;
            let selected = node
                .attribute("selected")
                .map(|s| boolean(s, "selected"))
                .transpose()?
                .unwrap_or(true);
            let cluster = node.attribute("cluster-id");
            let dependencies = dependencies(node);
            if is_group {
                platforms.extend(
                    node.children()
                        .filter(|c| is_xccdf(*c, "platform"))
                        .filter_map(|c| attr(c, "idref")),
                );
                let index =
                    catalog
                        .tree
                        .push(id, cluster, selected, parent_index, None, dependencies);
                groups.insert(node.id(), (index, platforms));
            } else {
                let rule_index = catalog.rules.len();
                catalog.tree.push(
                    id,
                    cluster,
                    selected,
                    parent_index,
                    Some(rule_index),
                    dependencies,
                );
                let rule = Rule::from_node(node, id.to_owned(), platforms, &values);
                catalog.rule_index.insert(rule.id.clone(), rule_index);
                catalog
                    .rule_index
                    .entry(rule.short_id.clone())
                    .or_insert(rule_index);
                catalog.rules.push(rule);
            }
        }
        Ok(catalog)
    }

    pub fn benchmark_id(&self) -> &str {
        &self.benchmark_id
    }

    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// A profile by full id (`xccdf_org.ssgproject.content_profile_stig`) or
    /// short id (`stig`).
    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.id == id)
            .or_else(|| self.profiles.iter().find(|p| p.short_id == id))
    }

    /// Every rule of the benchmark, selected or not, in document order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by full or short id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rule_index.get(id).map(|&i| &self.rules[i])
    }

    /// The rules evaluated without a profile (the benchmark's defaults).
    pub fn default_rules(&self) -> Vec<&Rule> {
        self.tree
            .selected_rules(std::iter::empty())
            .into_iter()
            .map(|i| &self.rules[i])
            .collect()
    }

    /// The rules `profile` (full or short id) selects, in document order:
    /// the defaults, then the selects of the profiles it extends (farthest
    /// parent first), then its own.
    pub fn rules_of(&self, profile: &str) -> Result<Vec<&Rule>, ScapError> {
        let chain = self.profile_chain(profile)?;
        let selects = chain.iter().rev().flat_map(|p| p.selects.iter());
        Ok(self
            .tree
            .selected_rules(selects)
            .into_iter()
            .map(|i| &self.rules[i])
            .collect())
    }

    /// `profile` and the profiles it extends, nearest first.
    fn profile_chain(&self, profile: &str) -> Result<Vec<&Profile>, ScapError> {
        let mut chain = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(profile);
        while let Some(id) = next {
            let found = self
                .profile(id)
                .ok_or_else(|| ScapError::UnknownProfile(id.to_owned()))?;
            if !seen.insert(found.id.as_str()) {
                return Err(ScapError::ProfileCycle(profile.to_owned()));
            }
            chain.push(found);
            next = found.extends.as_deref();
        }
        Ok(chain)
    }
}

/// A group's or rule's `<requires>` (each a list of alternatives) and
/// `<conflicts>`.
fn dependencies(node: Node) -> Dependencies {
    let mut dependencies = Dependencies::default();
    for child in node.children() {
        if is_xccdf(child, "requires") {
            let any_of = child.attribute("idref").unwrap_or_default();
            dependencies
                .requires
                .push(any_of.split_whitespace().map(str::to_owned).collect());
        } else if is_xccdf(child, "conflicts") {
            dependencies.conflicts.extend(attr(child, "idref"));
        }
    }
    dependencies
}

/// Value id → its default `<value>` (the one without a selector).
fn default_values(benchmark: Node) -> HashMap<String, String> {
    benchmark
        .descendants()
        .filter(|n| is_xccdf(*n, "Value"))
        .filter_map(|value| {
            let id = attr(value, "id")?;
            let default = value
                .children()
                .find(|c| is_xccdf(*c, "value") && c.attribute("selector").is_none())?;
            Some((id, default.text().unwrap_or_default().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
