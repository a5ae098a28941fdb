//! A one-rule datastream: the source datastream with every XCCDF Rule but
//! one removed, with the Groups and Values it does not need, the profile
//! items naming them, the prose of Groups and Values, and every OVAL and
//! OCIL item its checks do not reach (transitively). oscap then loads a few
//! hundred kB instead of the whole 6–22 MB datastream; everything that
//! decides the verdict stays: the rule, its enclosing Groups (their
//! platforms, selects), the Values it exports and their refinements, every
//! Profile (`extends`), rules named by `requires`/`conflicts`, the CPE
//! dictionary and its OVAL, and the rule's OVAL definitions with their
//! tests, objects, states and variables.
//! `agent/tests/fast_eval.rs` checks that verdicts equal plain oscap's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use roxmltree::{Document, Node, ParsingOptions};

const XCCDF_12: &str = "http://checklists.nist.gov/xccdf/1.2";
const OVAL_DEFS: &str = "http://oval.mitre.org/XMLSchema/oval-definitions-5";
const OCIL: &str = "http://scap.nist.gov/schema/ocil/2.0";

/// An OVAL id anywhere in an element's text: attributes (`test_ref`,
/// `object_ref`, `var_ref`, `definition_ref`, XCCDF `name`/`export-name`)
/// or element text (`filter`, `object_reference`, `var_ref`).
/// The same for OCIL ids (questionnaires, test actions, questions).
static CHECK_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:oval:[A-Za-z0-9_.\-]+:(?:def|tst|obj|ste|var)|ocil:[A-Za-z0-9_.\-]+:(?:questionnaire|testaction|question|variable|artifact)):[0-9]+")
        .expect("valid regex")
});

/// The datastream `ds` reduced to the XCCDF rule `rule` (its full id).
pub fn one_rule_datastream(ds: &str, rule: &str) -> Result<String, String> {
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: u32::MAX,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(ds, options).map_err(|e| e.to_string())?;
    let rules: HashMap<&str, Range<usize>> = doc
        .descendants()
        .filter(|n| is(*n, XCCDF_12, "Rule"))
        .filter_map(|n| Some((n.attribute("id")?, n.range())))
        .collect();
    let kept_rule = rules
        .get(rule)
        .map(|r| &ds[r.clone()])
        .ok_or_else(|| format!("the datastream has no rule {rule}"))?;
    // Rules named by a `requires` or `conflicts` stay: oscap's selection
    // of the kept rule may depend on them (they are not evaluated).
    let named: HashSet<&str> = doc
        .descendants()
        .filter(|n| is(*n, XCCDF_12, "requires") || is(*n, XCCDF_12, "conflicts"))
        .filter_map(|n| n.attribute("idref"))
        .flat_map(str::split_whitespace)
        .collect();
    // Values the rule exports to its checks.
    let exported: HashSet<&str> = doc
        .descendants()
        .filter(|n| is(*n, XCCDF_12, "check-export"))
        .filter(|n| n.ancestors().any(|a| a.attribute("id") == Some(rule)))
        .filter_map(|n| n.attribute("value-id"))
        .collect();
    let values: HashSet<&str> = doc
        .descendants()
        .filter(|n| is(*n, XCCDF_12, "Value"))
        .filter_map(|n| n.attribute("id"))
        .collect();
    let anchors: Vec<Range<usize>> = doc
        .descendants()
        .filter(|n| is(*n, XCCDF_12, "Rule") || is(*n, XCCDF_12, "Value"))
        .filter(|n| {
            let id = n.attribute("id").unwrap_or_default();
            id == rule || named.contains(id) || exported.contains(id)
        })
        .map(|n| n.range())
        .collect();
    // Groups holding none of them go whole (their prose, Values, Rules).
    let groups: HashMap<&str, Range<usize>> = doc
        .descendants()
        .filter(|n| is(*n, XCCDF_12, "Group"))
        .filter_map(|n| Some((n.attribute("id")?, n.range())))
        .filter(|(_, g)| !anchors.iter().any(|a| g.start <= a.start && a.end <= g.end))
        .collect();
    let gone = |id: &str| {
        (id != rule && rules.contains_key(id) && !named.contains(id))
            || groups.contains_key(id)
            || (values.contains(id) && !exported.contains(id))
    };
    let mut cut: Vec<Range<usize>> = rules
        .iter()
        .filter(|(id, _)| **id != rule && !named.contains(**id))
        .map(|(_, r)| r.clone())
        .chain(groups.values().cloned())
        .collect();
    // Values not exported to the rule's checks; profile items naming
    // anything cut.
    cut.extend(
        doc.descendants()
            .filter(|n| {
                (is(*n, XCCDF_12, "Value") && !exported.contains(n.attribute("id").unwrap_or("")))
                    || (["select", "refine-value", "set-value", "refine-rule"]
                        .iter()
                        .any(|name| is(*n, XCCDF_12, name))
                        && gone(n.attribute("idref").unwrap_or_default()))
            })
            .map(|n| n.range()),
    );
    let seeds: Vec<&str> = CHECK_ID.find_iter(kept_rule).map(|m| m.as_str()).collect();
    // Prose of Groups and Values: no verdict depends on it.
    cut.extend(
        doc.descendants()
            .filter(|n| {
                ["description", "rationale", "warning"]
                    .iter()
                    .any(|name| is(*n, XCCDF_12, name))
            })
            .filter(|n| {
                n.parent_element()
                    .is_some_and(|p| is(p, XCCDF_12, "Group") || is(p, XCCDF_12, "Value"))
            })
            .map(|n| n.range()),
    );
    for defs in doc
        .descendants()
        .filter(|n| is(*n, OVAL_DEFS, "oval_definitions") || is(*n, OCIL, "ocil"))
    {
        // OCIL serves only the rules' own checks; an OVAL component the
        // rule does not reach may be the CPE dictionary's: it stays.
        let always = is(defs, OCIL, "ocil");
        cut.extend(unreachable_oval(ds, defs, &seeds, always));
    }
    cut.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(ds.len() / 8);
    let mut at = 0;
    for r in cut {
        if r.start < at {
            continue; // inside a range already cut
        }
        out.push_str(&ds[at..r.start]);
        at = r.end;
    }
    out.push_str(&ds[at..]);
    Ok(out)
}

fn is(node: Node, ns: &str, name: &str) -> bool {
    node.tag_name().name() == name && node.tag_name().namespace() == Some(ns)
}

/// The elements of one OVAL or OCIL component that `seeds` do not reach; none when
/// no seed is defined in it and not `always` (the CPE OVAL, or a rule
/// without OVAL check).
fn unreachable_oval<'a>(
    ds: &'a str,
    defs: Node<'a, 'a>,
    seeds: &[&'a str],
    always: bool,
) -> Vec<Range<usize>> {
    let by_id: HashMap<&str, Range<usize>> = defs
        .children()
        .filter(|section| {
            section.is_element() && !["generator", "document"].contains(&section.tag_name().name())
        })
        .flat_map(|section| section.children().filter(|n| n.is_element()))
        .filter_map(|n| Some((n.attribute("id")?, n.range())))
        .collect();
    let mut reached: HashSet<&str> = HashSet::new();
    let mut queue: VecDeque<&str> = seeds
        .iter()
        .copied()
        .filter(|s| by_id.contains_key(s))
        .collect();
    if queue.is_empty() && !always {
        return Vec::new();
    }
    while let Some(id) = queue.pop_front() {
        if !reached.insert(id) {
            continue;
        }
        if let Some(range) = by_id.get(id) {
            for m in CHECK_ID.find_iter(&ds[range.clone()]) {
                if by_id.contains_key(m.as_str()) && !reached.contains(m.as_str()) {
                    queue.push_back(m.as_str());
                }
            }
        }
    }
    by_id
        .into_iter()
        .filter(|(id, _)| !reached.contains(id))
        .map(|(_, range)| range)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DS: &str = r#"<ds:data-stream-collection xmlns:ds="http://scap.nist.gov/schema/scap/source/1.2">
<ds:component id="x"><Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="b">
<Profile id="p"><select idref="r_a" selected="true"/><select idref="r_b" selected="true"/><select idref="g" selected="true"/>
<refine-value idref="v_a" selector="s"/><refine-value idref="v_b" selector="s"/></Profile>
<Group id="g"><description>prose</description>
<Value id="v_a"><value>1</value></Value><Value id="v_b"><value>2</value></Value>
<Rule id="r_a"><check system="oval"><check-export value-id="v_a" export-name="oval:t:var:1"/><check-content-ref name="oval:t:def:1"/></check></Rule>
<Rule id="r_b"><check system="oval"><check-content-ref name="oval:t:def:2"/></check></Rule>
</Group></Benchmark></ds:component>
<ds:component id="o"><oval_definitions xmlns="http://oval.mitre.org/XMLSchema/oval-definitions-5"><generator/>
<definitions><definition id="oval:t:def:1"><criteria><criterion test_ref="oval:t:tst:1"/></criteria></definition>
<definition id="oval:t:def:2"><criteria><criterion test_ref="oval:t:tst:2"/></criteria></definition></definitions>
<tests><t id="oval:t:tst:1"><object object_ref="oval:t:obj:1"/></t><t id="oval:t:tst:2"><object object_ref="oval:t:obj:2"/></t></tests>
<objects><o id="oval:t:obj:1"><path var_ref="oval:t:var:1"/></o><o id="oval:t:obj:2"/></objects>
<variables><external_variable id="oval:t:var:1"/></variables>
</oval_definitions></ds:component></ds:data-stream-collection>"#;

    #[test]
    fn keeps_the_rule_its_values_and_what_its_definition_reaches() {
        let one = one_rule_datastream(DS, "r_a").unwrap();
        for kept in [
            r#"<Rule id="r_a""#,
            r#"<Value id="v_a""#,
            r#"refine-value idref="v_a""#,
            r#"select idref="r_a""#,
            r#"select idref="g""#,
            r#"id="oval:t:def:1""#,
            r#"id="oval:t:tst:1""#,
            r#"id="oval:t:obj:1""#,
            r#"id="oval:t:var:1""#,
        ] {
            assert!(one.contains(kept), "{kept} cut:\n{one}");
        }
        for cut in [
            "r_b",
            "v_b",
            "prose",
            "oval:t:def:2",
            "oval:t:tst:2",
            "oval:t:obj:2",
        ] {
            assert!(!one.contains(cut), "{cut} kept:\n{one}");
        }
        Document::parse(&one).unwrap();
    }

    #[test]
    fn an_unknown_rule_is_an_error() {
        assert!(one_rule_datastream(DS, "r_c").is_err());
    }
}
