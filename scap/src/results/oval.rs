//! Index of one `<oval_results>` document (an ARF report) and the walk from
//! a definition's result to the items the target reported.
//!
//! OVAL results repeat the definitions (titles, comments, objects, states)
//! next to the verdicts (definition, test and item results) and the system
//! characteristics (collected objects and items), all joined by id; the
//! index maps each id to its node once so the walk is lookups only.

use std::collections::HashMap;

use roxmltree::Node;

use super::details::{
    CheckDetails, CriteriaNode, Field, Item, ObjectDetails, StateDetails, TestDetails, MAX_ITEMS,
};
use crate::xml::{is_in, OVAL_DEFINITIONS, OVAL_RESULTS, OVAL_SYSCHAR};

/// Criteria nesting and `extend_definition` chains deeper than this are
/// hostile, not content (SSG nests about 5).
const MAX_DEPTH: usize = 24;
/// Fields kept per object, state or item.
const MAX_FIELDS: usize = 64;

type Index<'a, 'i> = HashMap<&'a str, Node<'a, 'i>>;

#[derive(Default)]
pub(crate) struct OvalIndex<'a, 'i> {
    definitions: Index<'a, 'i>,
    tests: Index<'a, 'i>,
    objects: Index<'a, 'i>,
    states: Index<'a, 'i>,
    definition_results: Index<'a, 'i>,
    test_results: Index<'a, 'i>,
    collected: Index<'a, 'i>,
    items: Index<'a, 'i>,
}

impl<'a, 'i> OvalIndex<'a, 'i> {
    pub(crate) fn new(oval_results: Node<'a, 'i>) -> Self {
        let mut index = OvalIndex::default();
        for defs in kids(oval_results, OVAL_DEFINITIONS, "oval_definitions") {
            add_grandchildren(&mut index.definitions, defs, "definitions", "id");
            add_grandchildren(&mut index.tests, defs, "tests", "id");
            add_grandchildren(&mut index.objects, defs, "objects", "id");
            add_grandchildren(&mut index.states, defs, "states", "id");
        }
        for results in kids(oval_results, OVAL_RESULTS, "results") {
            for system in kids(results, OVAL_RESULTS, "system") {
                add_grandchildren(
                    &mut index.definition_results,
                    system,
                    "definitions",
                    "definition_id",
                );
                add_grandchildren(&mut index.test_results, system, "tests", "test_id");
                for sc in kids(system, OVAL_SYSCHAR, "oval_system_characteristics") {
                    add_grandchildren(&mut index.collected, sc, "collected_objects", "id");
                    add_grandchildren(&mut index.items, sc, "system_data", "id");
                }
            }
        }
        index
    }

    /// The verdict on `definition_id` and, where it did not come out true,
    /// why.
    pub(crate) fn check_details(&self, definition_id: &str) -> CheckDetails {
        let result = self.definition_results.get(definition_id);
        let definition = self.definitions.get(definition_id).copied();
        let title = definition
            .and_then(|d| d.children().find(|c| c.has_tag_name("metadata")))
            .and_then(|m| m.children().find(|c| c.has_tag_name("title")))
            .and_then(|t| t.text())
            .map(|t| t.trim().to_owned());
        let mut path = vec![definition_id.to_owned()];
        CheckDetails {
            definition_id: definition_id.to_owned(),
            title,
            result: result
                .and_then(|r| r.attribute("result"))
                .unwrap_or("unknown")
                .to_owned(),
            criteria: self.definition_criteria(definition_id, 0, &mut path),
        }
    }

    fn definition_criteria(
        &self,
        definition_id: &str,
        depth: usize,
        path: &mut Vec<String>,
    ) -> Option<CriteriaNode> {
        let result = self.definition_results.get(definition_id)?;
        let criteria = element_children(*result).find(|c| c.tag_name().name() == "criteria")?;
        let described = self
            .definitions
            .get(definition_id)
            .and_then(|d| element_children(*d).find(|c| c.tag_name().name() == "criteria"));
        Some(self.criteria_node(criteria, described, depth, path))
    }

    /// `result` is a node of the results' criteria; `described` the node at
    /// the same place in the definition, which holds the comments.
    fn criteria_node(
        &self,
        result: Node<'a, 'i>,
        described: Option<Node>,
        depth: usize,
        path: &mut Vec<String>,
    ) -> CriteriaNode {
        let comment = described
            .and_then(|d| d.attribute("comment"))
            .map(str::to_owned);
        let negate = result.attribute("negate") == Some("true");
        let verdict = result.attribute("result").unwrap_or("unknown").to_owned();
        let worth_explaining = explains_failure(&verdict);
        match result.tag_name().name() {
            "criterion" => {
                let test_id = result.attribute("test_ref").unwrap_or_default();
                CriteriaNode::Criterion {
                    test_id: test_id.to_owned(),
                    negate,
                    comment,
                    test: worth_explaining.then(|| Box::new(self.test_details(test_id, &verdict))),
                    result: verdict,
                }
            }
            "extend_definition" => {
                let definition_id = result.attribute("definition_ref").unwrap_or_default();
                let criteria = if worth_explaining
                    && depth < MAX_DEPTH
                    && !path.iter().any(|p| p == definition_id)
                {
                    path.push(definition_id.to_owned());
                    let criteria = self.definition_criteria(definition_id, depth + 1, path);
                    path.pop();
                    criteria.map(Box::new)
                } else {
                    None
                };
                CriteriaNode::ExtendDefinition {
                    definition_id: definition_id.to_owned(),
                    negate,
                    comment,
                    result: verdict,
                    criteria,
                }
            }
            _ => {
                let described_children: Vec<Node> = described
                    .map(|d| element_children(d).collect())
                    .unwrap_or_default();
                let children = if depth < MAX_DEPTH {
                    element_children(result)
                        .enumerate()
                        .map(|(i, child)| {
                            let twin = described_children
                                .get(i)
                                .copied()
                                .filter(|d| d.tag_name().name() == child.tag_name().name());
                            self.criteria_node(child, twin, depth + 1, path)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                CriteriaNode::Criteria {
                    operator: result.attribute("operator").unwrap_or("AND").to_owned(),
                    negate,
                    comment,
                    result: verdict,
                    children,
                }
            }
        }
    }

    fn test_details(&self, test_id: &str, criterion_result: &str) -> TestDetails {
        let result = self.test_results.get(test_id).copied();
        let test = self.tests.get(test_id).copied();
        let object_ref = test
            .and_then(|t| element_children(t).find(|c| c.tag_name().name() == "object"))
            .and_then(|o| o.attribute("object_ref"));
        let states = test
            .into_iter()
            .flat_map(element_children)
            .filter(|c| c.tag_name().name() == "state")
            .filter_map(|s| s.attribute("state_ref"))
            .map(|id| StateDetails {
                id: id.to_owned(),
                kind: self
                    .states
                    .get(id)
                    .map(|s| s.tag_name().name().to_owned())
                    .unwrap_or_default(),
                entities: self.states.get(id).map(|s| fields(*s)).unwrap_or_default(),
            })
            .collect();
        // The test's own list says which items it judged and how.
        let tested: Vec<(&str, Option<&str>)> = result
            .into_iter()
            .flat_map(element_children)
            .filter(|c| c.tag_name().name() == "tested_item")
            .filter_map(|c| Some((c.attribute("item_id")?, c.attribute("result"))))
            .collect();
        TestDetails {
            id: test_id.to_owned(),
            kind: test
                .map(|t| t.tag_name().name().to_owned())
                .unwrap_or_default(),
            comment: test.and_then(|t| t.attribute("comment")).map(str::to_owned),
            check: result.and_then(|r| r.attribute("check")).map(str::to_owned),
            check_existence: result
                .and_then(|r| r.attribute("check_existence"))
                .map(str::to_owned),
            result: result
                .and_then(|r| r.attribute("result"))
                .unwrap_or(criterion_result)
                .to_owned(),
            object: object_ref.map(|id| self.object_details(id, &tested)),
            states,
        }
    }

    fn object_details(&self, object_id: &str, tested: &[(&str, Option<&str>)]) -> ObjectDetails {
        let object = self.objects.get(object_id).copied();
        let collected = self.collected.get(object_id).copied();
        let item_refs: Vec<(&str, Option<&str>)> = if tested.is_empty() {
            collected
                .into_iter()
                .flat_map(element_children)
                .filter(|c| c.tag_name().name() == "reference")
                .filter_map(|c| Some((c.attribute("item_ref")?, None)))
                .collect()
        } else {
            tested.to_vec()
        };
        let items = item_refs
            .iter()
            .take(MAX_ITEMS)
            .map(|(id, result)| {
                let node = self.items.get(id).copied();
                Item {
                    id: (*id).to_owned(),
                    kind: node
                        .map(|n| n.tag_name().name().to_owned())
                        .unwrap_or_default(),
                    status: node.and_then(|n| n.attribute("status")).map(str::to_owned),
                    result: result.map(str::to_owned),
                    fields: node.map(fields).unwrap_or_default(),
                }
            })
            .collect();
        ObjectDetails {
            id: object_id.to_owned(),
            kind: object
                .map(|o| o.tag_name().name().to_owned())
                .unwrap_or_default(),
            entities: object.map(fields).unwrap_or_default(),
            flag: collected
                .and_then(|c| c.attribute("flag"))
                .map(str::to_owned),
            messages: collected
                .into_iter()
                .flat_map(element_children)
                .filter(|c| c.tag_name().name() == "message")
                .filter_map(|m| m.text())
                .map(|t| t.trim().to_owned())
                .collect(),
            items,
            items_omitted: item_refs.len().saturating_sub(MAX_ITEMS),
        }
    }
}

/// A verdict that says something went wrong here (not `true`, and not the
/// short-circuited `not evaluated` / `not applicable`).
fn explains_failure(result: &str) -> bool {
    !matches!(result, "true" | "not evaluated" | "not applicable")
}

/// Child elements of an object, state or item, except OVAL bookkeeping.
fn fields(node: Node) -> Vec<Field> {
    element_children(node)
        .filter(|c| !matches!(c.tag_name().name(), "notes" | "set" | "signature"))
        .take(MAX_FIELDS)
        .map(|c| Field {
            name: c.tag_name().name().to_owned(),
            operation: c
                .attribute("operation")
                .filter(|op| *op != "equals")
                .map(str::to_owned),
            value: field_value(c),
        })
        .collect()
}

/// The text, else (an entity bound to a variable, or `behaviors`) its
/// attributes as `name=value`.
fn field_value(node: Node) -> String {
    let text: String = node
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    if !text.trim().is_empty() {
        return text;
    }
    node.attributes()
        .filter(|a| !matches!(a.name(), "operation" | "datatype"))
        .map(|a| format!("{}={}", a.name(), a.value()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn element_children<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(|c| c.is_element())
}

fn kids<'a, 'i>(
    node: Node<'a, 'i>,
    ns: &'static str,
    local: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is_in(*c, ns, local))
}

/// `index[id] = grandchild` for each element child of `parent`'s `<container>`.
fn add_grandchildren<'a, 'i>(
    index: &mut Index<'a, 'i>,
    parent: Node<'a, 'i>,
    container: &str,
    id_attribute: &str,
) {
    for holder in element_children(parent).filter(|c| c.tag_name().name() == container) {
        for node in element_children(holder) {
            if let Some(id) = node.attribute(id_attribute) {
                index.insert(id, node);
            }
        }
    }
}
