//! The bundle of a (skill pack, profile) (DESIGN H2): `main`'s verified
//! skills for the profile's rules, in the pack's order, each section
//! labelled with its rule and provenance. The coordinator builds it from
//! `main` and the pack; compose and harden tasks carry it to agents; the
//! exports (bash, Ansible) render it.

use serde::{Deserialize, Serialize};

/// Where a section's script came from on `main`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillProvenance {
    /// The commit on `main` that last wrote `skills/<rule>.sh`.
    pub commit: String,
    /// The git blob id of the script.
    pub blob: String,
    /// The run whose fix was promoted, when the commit names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// The promotion ledger entry that applied it, when the commit names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<i64>,
}

/// One rule's fix within a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSection {
    /// Short rule id (`package_cron_installed`).
    pub rule: String,
    /// The rule's title from the SCAP content; empty when unknown.
    #[serde(default)]
    pub title: String,
    pub script: String,
    pub provenance: SkillProvenance,
}

/// The ordered bundle. A pure function of `main` and the pack: the same
/// inputs give the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub skill_pack: String,
    /// XCCDF profile id.
    pub profile: String,
    /// The `main` commit the bundle was read from.
    pub main_commit: String,
    pub sections: Vec<BundleSection>,
}

impl Bundle {
    /// The section of `rule`, if the bundle has one.
    pub fn section(&self, rule: &str) -> Option<&BundleSection> {
        self.sections.iter().find(|s| s.rule == rule)
    }
}
