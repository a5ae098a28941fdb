//! Which rules a profile selects, by XCCDF's rules: every Group and Rule has
//! a default `selected`; a profile's `<select idref=…>` overrides it, where
//! `idref` names an item or a `cluster-id` shared by several; and a rule is
//! evaluated only if it and every enclosing group end up selected (a rule
//! selected inside a deselected group is not evaluated, as oscap does).
//!
//! Then `<requires>` and `<conflicts>`, the way current oscap applies them
//! (its `test_xccdf_requires_conflicts` pins the behaviour down): one pass
//! in document order over the items whose groups are selected; an item still
//! selected is deselected if some `<requires idref="a b">` names no selected
//! item (any one of a list suffices), or some `<conflicts>` names a selected
//! one. "Selected" is the item's own state so far, enclosing groups ignored,
//! and a deselection is seen by the items after it, not by those before.
//! (oscap 1.3.7 agrees on SSG content, e.g. RHEL 9 `stig` drops
//! `package_MFEhiplsm_installed` for conflicting with `selinux_state`, but
//! on contrived content it aborts on an unknown idref and can skip the rest
//! of a benchmark after an unmet `requires`.)

use std::collections::HashMap;

/// A profile's `<select>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    pub idref: String,
    pub selected: bool,
}

/// Groups and rules in document order, so a parent precedes its children.
#[derive(Debug, Default, Clone)]
pub(crate) struct ItemTree {
    items: Vec<Item>,
    by_id: HashMap<String, usize>,
    by_cluster: HashMap<String, Vec<usize>>,
}

#[derive(Debug, Clone)]
struct Item {
    selected: bool,
    parent: Option<usize>,
    /// Index into the catalog's rules; `None` for a group.
    rule: Option<usize>,
    dependencies: Dependencies,
}

/// An item's `<requires>` and `<conflicts>` idrefs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dependencies {
    /// Each entry is one `<requires>`: satisfied by any of its idrefs.
    pub(crate) requires: Vec<Vec<String>>,
    pub(crate) conflicts: Vec<String>,
}

impl ItemTree {
    pub(crate) fn push(
        &mut self,
        id: &str,
        cluster: Option<&str>,
        selected: bool,
        parent: Option<usize>,
        rule: Option<usize>,
        dependencies: Dependencies,
    ) -> usize {
        let index = self.items.len();
        self.items.push(Item {
            selected,
            parent,
            rule,
            dependencies,
        });
        self.by_id.insert(id.to_owned(), index);
        if let Some(cluster) = cluster {
            self.by_cluster
                .entry(cluster.to_owned())
                .or_default()
                .push(index);
        }
        index
    }

    /// Rule indices selected after applying `selects` in order (later wins),
    /// in document order. An idref naming nothing is ignored, as oscap does.
    pub(crate) fn selected_rules<'a>(
        &self,
        selects: impl IntoIterator<Item = &'a Select>,
    ) -> Vec<usize> {
        let mut selected: Vec<bool> = self.items.iter().map(|i| i.selected).collect();
        for select in selects {
            if let Some(&index) = self.by_id.get(&select.idref) {
                selected[index] = select.selected;
            } else if let Some(members) = self.by_cluster.get(&select.idref) {
                for &index in members {
                    selected[index] = select.selected;
                }
            }
        }
        let mut effective = vec![false; self.items.len()];
        let mut rules = Vec::new();
        for (index, item) in self.items.iter().enumerate() {
            let groups_selected = item.parent.is_none_or(|p| effective[p]);
            if groups_selected
                && selected[index]
                && !self.dependencies_met(&item.dependencies, &selected)
            {
                selected[index] = false;
            }
            effective[index] = groups_selected && selected[index];
            if let (true, Some(rule)) = (effective[index], item.rule) {
                rules.push(rule);
            }
        }
        rules
    }

    /// An idref naming nothing counts as an unselected item.
    fn dependencies_met(&self, dependencies: &Dependencies, selected: &[bool]) -> bool {
        let is_selected = |idref: &String| self.by_id.get(idref).is_some_and(|&i| selected[i]);
        dependencies
            .requires
            .iter()
            .all(|any_of| any_of.iter().any(is_selected))
            && !dependencies.conflicts.iter().any(is_selected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(idref: &str, selected: bool) -> Select {
        Select {
            idref: idref.to_owned(),
            selected,
        }
    }

    fn none() -> Dependencies {
        Dependencies::default()
    }

    /// g1 (selected) { r0 (off), g2 (off) { r1 (on) } }, r2 (on, cluster c)
    fn tree() -> ItemTree {
        let mut t = ItemTree::default();
        let g1 = t.push("g1", None, true, None, None, none());
        t.push("r0", Some("c"), false, Some(g1), Some(0), none());
        let g2 = t.push("g2", None, false, Some(g1), None, none());
        t.push("r1", None, true, Some(g2), Some(1), none());
        t.push("r2", Some("c"), true, None, Some(2), none());
        t
    }

    #[test]
    fn defaults_need_every_ancestor_selected() {
        assert_eq!(tree().selected_rules(&[]), vec![2]);
    }

    #[test]
    fn selecting_a_group_releases_its_selected_rules() {
        assert_eq!(tree().selected_rules(&[select("g2", true)]), vec![1, 2]);
        assert_eq!(tree().selected_rules(&[select("g1", false)]), vec![2]);
    }

    #[test]
    fn later_selects_win_and_clusters_apply_to_all_members() {
        let selects = [select("r0", true), select("c", false), select("r2", true)];
        assert_eq!(tree().selected_rules(&selects), vec![2]);
        assert_eq!(tree().selected_rules(&[select("c", true)]), vec![0, 2]);
        assert_eq!(tree().selected_rules(&[select("nothing", true)]), vec![2]);
    }
}
