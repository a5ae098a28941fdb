//! Skill packs on disk: `<dir>/<name>/pack.toml`, loaded on demand so an
//! edited pack takes effect at the next submission without a restart.

use std::path::{Path, PathBuf};

use fleet_common::skill_pack::SkillPack;

use crate::catalog::Catalogs;
use crate::error::CoordinatorError;
use crate::scan::BaselineScan;

#[derive(Debug, Clone)]
pub struct SkillPacks {
    dir: PathBuf,
    catalogs: Catalogs,
    scan: Option<BaselineScan>,
}

impl SkillPacks {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            catalogs: Catalogs::default(),
            scan: None,
        }
    }

    /// Scan this target image before planning, so rules already passing
    /// there are not leased.
    pub fn with_baseline_scan(mut self, image: Option<String>) -> Self {
        self.scan = image.map(|image| BaselineScan { image });
        self
    }

    pub fn baseline_scan(&self) -> Option<&BaselineScan> {
        self.scan.as_ref()
    }

    /// Rule catalogs of the packs' datastreams (parsed once per version).
    pub fn catalogs(&self) -> &Catalogs {
        &self.catalogs
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads one pack. A name is a single path component of a conservative
    /// alphabet, so a request can never read outside the packs directory.
    pub fn get(&self, name: &str) -> Result<SkillPack, CoordinatorError> {
        if !is_valid_name(name) {
            return Err(CoordinatorError::Invalid(format!(
                "skill pack name {name:?} must be 1-100 characters of [A-Za-z0-9._-] and not start with '.'"
            )));
        }
        let dir = self.dir.join(name);
        if !dir.join("pack.toml").is_file() {
            return Err(CoordinatorError::Invalid(self.unknown_message(name)));
        }
        Ok(SkillPack::load(&dir)?)
    }

    /// Names of the directories that hold a `pack.toml`, sorted.
    pub fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("pack.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_valid_name(n))
            .collect();
        names.sort();
        names
    }

    pub(crate) fn unknown_message(&self, name: &str) -> String {
        let known = self.names();
        if known.is_empty() {
            format!(
                "unknown skill pack {name:?}: no skill packs are installed under {}",
                self.dir.display()
            )
        } else {
            format!(
                "unknown skill pack {name:?}; known skill packs: {}",
                known.join(", ")
            )
        }
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_directory() {
        for bad in ["", ".", "..", "../etc", "a/b", "a b", ".hidden"] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
        for good in ["debian11", "rhel9-stig", "cis_1.2"] {
            assert!(is_valid_name(good), "{good:?} refused");
        }
    }

    #[test]
    fn unknown_pack_lists_the_known_ones() {
        let dir = std::env::temp_dir().join(format!("packs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("alpha")).unwrap();
        std::fs::write(
            dir.join("alpha/pack.toml"),
            "name = \"alpha\"\nprofile = \"p\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("not-a-pack")).unwrap();
        let packs = SkillPacks::new(&dir);
        assert_eq!(packs.names(), vec!["alpha".to_string()]);
        assert_eq!(packs.get("alpha").unwrap().profile, "p");
        let err = packs.get("beta").unwrap_err().to_string();
        assert!(err.contains("\"beta\"") && err.contains("alpha"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shipped_packs_load_with_their_templates_and_checks() {
        let packs = SkillPacks::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../skill-packs"));
        let names = packs.names();
        for want in ["sim-demo", "ssg-debian11-standard", "stig-rhel9"] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        for name in ["ssg-debian11-standard", "stig-rhel9"] {
            let pack = packs.get(name).unwrap();
            assert!(pack.checks.datastream.is_some(), "{name}: no datastream");
            assert!(!pack.checks.health.is_empty(), "{name}: no health checks");
            let worker = pack.prompts.worker.as_deref().unwrap_or_default();
            assert!(worker.contains("{{rule_id}}"), "{name}: worker template");
            assert!(
                pack.prompts.reflector.is_some(),
                "{name}: reflector template"
            );
            assert!(pack.always_escalates("partition_for_var"), "{name}");
        }
        let stig = packs.get("stig-rhel9").unwrap();
        let extra = stig.escalate_touching();
        assert!(extra.commands.iter().any(|c| c == "update-crypto-policies"));
        assert!(extra.paths.iter().any(|p| p.matches("/etc/sssd/sssd.conf")));
    }
}
