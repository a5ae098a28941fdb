//! The SCAP parsers on any text: `Evaluation::parse` (oscap's ARF or XCCDF
//! results) and `Catalog::parse` (a source datastream). Never a panic; every
//! parsed rule is found again by its ids, and a rule's details text keeps
//! to the byte cap the Reflector's prompt relies on.

use fleet_scap::{Catalog, Evaluation};

pub fn check(data: &[u8]) {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(evaluation) = Evaluation::parse(xml) {
        for rule in evaluation.rules() {
            let found = evaluation.rule(&rule.rule_id).expect("found by full id");
            assert_eq!(found.rule_id, rule.rule_id);
            assert!(
                evaluation.rule(&rule.short_id).is_some(),
                "found by short id"
            );
            let full = rule.details_text(usize::MAX);
            assert!(full.starts_with(&format!("rule {}: ", rule.short_id)));
            for cap in [0, 1, 13, 64, 4096] {
                let text = rule.details_text(cap);
                assert!(
                    text.len() <= cap,
                    "{} bytes over a cap of {cap}",
                    text.len()
                );
            }
        }
        assert!(evaluation.evaluated().count() <= evaluation.rules().len());
    }
    if let Ok(catalog) = Catalog::parse(xml) {
        for rule in catalog.rules() {
            assert_eq!(catalog.rule(&rule.id).map(|r| &r.id), Some(&rule.id));
            assert!(catalog.rule(&rule.short_id).is_some(), "found by short id");
        }
        let ids: std::collections::HashSet<&str> =
            catalog.rules().iter().map(|r| r.id.as_str()).collect();
        for rule in catalog.default_rules() {
            assert!(ids.contains(rule.id.as_str()));
        }
        for profile in catalog.profiles() {
            if let Ok(rules) = catalog.rules_of(&profile.id) {
                assert!(rules.iter().all(|r| ids.contains(r.id.as_str())));
            }
        }
    }
}
