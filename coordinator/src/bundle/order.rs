//! The order of a bundle's sections (DESIGN H2), from the pack alone:
//! ordering constraints first (a rule matching an `[[ordering]]`'s `rule`
//! comes after every rule matching its `after`), then families kept
//! together, then the profile's order. Deterministic for the same pack and
//! rule list.

use std::collections::HashMap;

use fleet_common::skill_pack::SkillPack;

/// `rules` (in the profile's order) in bundle order.
pub fn bundle_order(pack: &SkillPack, rules: &[String]) -> Vec<String> {
    let n = rules.len();
    // A family sits where its first member sits in the profile.
    let families: Vec<String> = rules.iter().map(|r| pack.family_of(r)).collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, f) in families.iter().enumerate() {
        first.entry(f.as_str()).or_insert(i);
    }
    let family_rank: Vec<usize> = families.iter().map(|f| first[f.as_str()]).collect();

    // Edges after → rule. As in the queue's placement, a rule matching
    // both patterns is held, never one of those it waits for.
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for o in &pack.ordering {
        let held: Vec<usize> = (0..n).filter(|&i| o.rule.matches(&rules[i])).collect();
        let before: Vec<usize> = (0..n)
            .filter(|&j| o.after.matches(&rules[j]) && !o.rule.matches(&rules[j]))
            .collect();
        for &i in &held {
            for &j in &before {
                successors[j].push(i);
                waiting[i] += 1;
            }
        }
    }

    let mut placed = vec![false; n];
    let mut out = Vec::with_capacity(n);
    let mut current: Option<usize> = None;
    while out.len() < n {
        // Stay in the current family while one of its members is free,
        // else the earliest family, then the profile's order.
        let key = |i: &usize| (Some(family_rank[*i]) != current, family_rank[*i], *i);
        let free = (0..n)
            .filter(|&i| !placed[i] && waiting[i] == 0)
            .min_by_key(key);
        let pick = match free {
            Some(i) => i,
            None => {
                // Only a cycle in the pack's constraints leaves nothing
                // free; break it at the earliest rule, the same way each time.
                let i = (0..n).filter(|&i| !placed[i]).min_by_key(key).unwrap_or(0);
                tracing::warn!(pack = %pack.name, rule = %rules[i], "ordering constraints form a cycle; broken at this rule");
                i
            }
        };
        placed[pick] = true;
        current = Some(family_rank[pick]);
        for &s in &successors[pick] {
            waiting[s] = waiting[s].saturating_sub(1);
        }
        out.push(rules[pick].clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = r#"
name = "demo"
profile = "p"
[[family]]
pattern = "package_*_installed"
name = "package_installed"
[[family]]
pattern = "file_permissions_etc_*"
name = "file_permissions_etc"
[[ordering]]
rule = "service_*_enabled"
after = "package_*_installed"
[[ordering]]
rule = "audit_rules_immutable"
after = "audit_rules_*"
"#;

    fn order(rules: &[&str]) -> Vec<String> {
        let pack = SkillPack::parse(PACK).unwrap();
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        bundle_order(&pack, &rules)
    }

    #[test]
    fn held_rules_come_after_what_they_wait_for() {
        let got = order(&[
            "service_cron_enabled",
            "audit_rules_immutable",
            "package_cron_installed",
            "audit_rules_time",
            "sshd_x",
            "package_rsyslog_installed",
        ]);
        assert_eq!(
            got,
            [
                "package_cron_installed",
                "package_rsyslog_installed",
                "service_cron_enabled",
                "audit_rules_time",
                "audit_rules_immutable",
                "sshd_x",
            ]
        );
    }

    #[test]
    fn families_stay_together_in_the_profiles_order() {
        let got = order(&[
            "file_permissions_etc_passwd",
            "sshd_a",
            "package_cron_installed",
            "file_permissions_etc_group",
            "package_rsyslog_installed",
        ]);
        assert_eq!(
            got,
            [
                "file_permissions_etc_passwd",
                "file_permissions_etc_group",
                "sshd_a",
                "package_cron_installed",
                "package_rsyslog_installed",
            ]
        );
    }

    #[test]
    fn a_cycle_is_broken_the_same_way_every_time() {
        let pack = SkillPack::parse(
            "name='c'\nprofile='p'\n[[ordering]]\nrule='a'\nafter='b'\n[[ordering]]\nrule='b'\nafter='a'\n",
        )
        .unwrap();
        let rules = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let first = bundle_order(&pack, &rules);
        assert_eq!(first.len(), 3);
        assert_eq!(first, bundle_order(&pack, &rules));
    }

    #[test]
    fn nothing_in_gives_nothing_out() {
        assert!(order(&[]).is_empty());
    }
}
