//! A skill pack's family map and ordering constraints (`pack.toml`).
//!
//! Families are fine-grained (DESIGN D5): the first `[[family]]` whose glob
//! matches a rule id names its family; a rule no pattern matches is its own
//! family. An `[[ordering]]` entry holds a rule until the rules matching
//! `after` have at most `remaining` unfinished, e.g. `audit_rules_immutable`
//! only after the rest of the audit rules.

use std::path::{Path, PathBuf};

use glob::Pattern;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SkillPackError {
    #[error("cannot read skill pack {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("skill pack {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    name: String,
    #[serde(default)]
    description: String,
    /// Profile used when a submission names none.
    profile: String,
    #[serde(default)]
    family: Vec<FamilyFile>,
    #[serde(default)]
    ordering: Vec<OrderingFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilyFile {
    pattern: String,
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderingFile {
    rule: String,
    after: String,
    #[serde(default)]
    remaining: u32,
}

#[derive(Debug, Clone)]
pub struct Ordering {
    /// Rules (glob) that are held.
    pub rule: Pattern,
    /// Rules (glob) that must be nearly finished first; also the group name.
    pub after: Pattern,
    /// Release when at most this many of `after` are unfinished.
    pub remaining: u32,
}

#[derive(Debug, Clone)]
pub struct SkillPack {
    pub name: String,
    pub description: String,
    pub profile: String,
    families: Vec<(Pattern, String)>,
    pub ordering: Vec<Ordering>,
}

/// Where a rule sits in the queue's ordering.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Ordering groups the rule counts towards.
    pub groups: Vec<String>,
    /// Group and threshold the rule waits for.
    pub hold: Option<(String, u32)>,
}

impl SkillPack {
    pub fn load(dir: &Path) -> Result<Self, SkillPackError> {
        let path = dir.join("pack.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| SkillPackError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| SkillPackError::Invalid { path, message })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PackFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let pattern = |p: &str| Pattern::new(p).map_err(|e| format!("bad glob {p:?}: {e}"));
        let families = file
            .family
            .iter()
            .map(|f| Ok((pattern(&f.pattern)?, f.name.clone())))
            .collect::<Result<Vec<_>, String>>()?;
        let ordering = file
            .ordering
            .iter()
            .map(|o| {
                Ok(Ordering {
                    rule: pattern(&o.rule)?,
                    after: pattern(&o.after)?,
                    remaining: o.remaining,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            name: file.name,
            description: file.description,
            profile: file.profile,
            families,
            ordering,
        })
    }

    pub fn family_of(&self, rule: &str) -> String {
        self.families
            .iter()
            .find(|(p, _)| p.matches(rule))
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| rule.to_owned())
    }

    /// Groups and hold of a rule. A held rule never counts towards the group
    /// it waits on, or it would wait for itself.
    pub fn placement(&self, rule: &str) -> Placement {
        let hold = self
            .ordering
            .iter()
            .find(|o| o.rule.matches(rule))
            .map(|o| (o.after.as_str().to_owned(), o.remaining));
        let groups = self
            .ordering
            .iter()
            .filter(|o| o.after.matches(rule) && !o.rule.matches(rule))
            .map(|o| o.after.as_str().to_owned())
            .collect();
        Placement { groups, hold }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = r#"
name = "demo"
profile = "standard"
[[family]]
pattern = "audit_rules_dac_modification_*"
name = "audit_rules_dac_modification"
[[ordering]]
rule = "audit_rules_immutable"
after = "audit_rules_*"
remaining = 0
"#;

    #[test]
    fn families_are_fine_grained_and_default_to_the_rule() {
        let p = SkillPack::parse(PACK).unwrap();
        assert_eq!(
            p.family_of("audit_rules_dac_modification_chmod"),
            "audit_rules_dac_modification"
        );
        assert_eq!(
            p.family_of("sshd_disable_root_login"),
            "sshd_disable_root_login"
        );
    }

    #[test]
    fn held_rule_waits_on_its_group_without_counting_itself() {
        let p = SkillPack::parse(PACK).unwrap();
        let held = p.placement("audit_rules_immutable");
        assert_eq!(held.hold, Some(("audit_rules_*".into(), 0)));
        assert!(held.groups.is_empty());
        let member = p.placement("audit_rules_dac_modification_chmod");
        assert_eq!(member.groups, vec!["audit_rules_*".to_string()]);
        assert_eq!(member.hold, None);
    }

    #[test]
    fn unknown_fields_are_an_error() {
        assert!(SkillPack::parse("name='x'\nprofile='p'\nsurprise=1").is_err());
    }
}
