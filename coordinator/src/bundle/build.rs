//! Building the bundle (DESIGN H2): a pure function of what `main` holds
//! and the pack, so the same inputs give the same bytes.

use std::collections::BTreeMap;

use fleet_common::bundle::{Bundle, BundleSection, SkillProvenance};
use fleet_common::skill_pack::SkillPack;
use fleet_knowledge::{DreamAction, FileWrite, KnowledgeError, MainTree};

use super::order::bundle_order;

/// One `skills/<rule>.sh` on `main` with the history of its path.
#[derive(Debug, Clone)]
pub struct SkillOnMain {
    pub script: Vec<u8>,
    /// Changes to `skills/<rule>.sh`, newest first.
    pub writes: Vec<FileWrite>,
}

/// The skills of one `main` commit, read once.
#[derive(Debug, Clone, Default)]
pub struct SkillsOnMain {
    /// The commit read (empty when `main` does not exist).
    pub commit: String,
    /// By rule.
    pub skills: BTreeMap<String, SkillOnMain>,
}

impl SkillsOnMain {
    /// Reads every skill of `main` and the history of each (one walk).
    pub fn read(main: &MainTree) -> Result<Self, KnowledgeError> {
        let mut writes = main.writes_under("skills")?;
        let skills = main
            .skills()?
            .into_iter()
            .map(|(rule, script)| {
                let writes = writes.remove(&format!("{rule}.sh")).unwrap_or_default();
                (rule, SkillOnMain { script, writes })
            })
            .collect();
        Ok(Self {
            commit: main.commit().unwrap_or_default(),
            skills,
        })
    }
}

/// The bundle of `profile`: the skills of `rules` (short id and title, in
/// the profile's order) that `main` holds, in the pack's order.
pub fn build(
    pack: &SkillPack,
    profile: &str,
    rules: &[(String, String)],
    main: &SkillsOnMain,
) -> Result<Bundle, KnowledgeError> {
    let titles: BTreeMap<&str, &str> = rules
        .iter()
        .map(|(r, t)| (r.as_str(), t.as_str()))
        .collect();
    let covered: Vec<String> = rules
        .iter()
        .filter(|(r, _)| main.skills.contains_key(r))
        .map(|(r, _)| r.clone())
        .collect();
    let mut sections = Vec::with_capacity(covered.len());
    for rule in bundle_order(pack, &covered) {
        let skill = &main.skills[&rule];
        let script = String::from_utf8(skill.script.clone())
            .map_err(|_| KnowledgeError::Malformed(format!("skills/{rule}.sh is not UTF-8")))?;
        // A NUL cannot pass through a shell script or a YAML string intact.
        if script.contains('\0') {
            return Err(KnowledgeError::Malformed(format!(
                "skills/{rule}.sh holds a NUL byte"
            )));
        }
        sections.push(BundleSection {
            title: titles
                .get(rule.as_str())
                .copied()
                .unwrap_or_default()
                .to_owned(),
            script,
            provenance: provenance(&skill.writes),
            rule,
        });
    }
    Ok(Bundle {
        skill_pack: pack.name.clone(),
        profile: profile.to_owned(),
        main_commit: main.commit.clone(),
        sections,
    })
}

/// The commit that last wrote the path and its blob; run and ledger of
/// the newest promotion that wrote that same blob, so a revert back to an
/// older script names the promotion the script came from.
fn provenance(writes: &[FileWrite]) -> SkillProvenance {
    let Some(last) = writes.first() else {
        return SkillProvenance::default();
    };
    let blob = last.blob.clone().unwrap_or_default();
    let origin = writes
        .iter()
        .filter(|w| w.blob.as_deref() == Some(blob.as_str()))
        .find(|w| w.trailers.action != Some(DreamAction::Revert));
    SkillProvenance {
        commit: last.commit.clone(),
        run: origin.and_then(|w| w.trailers.run),
        ledger: origin.and_then(|w| w.trailers.ledger),
        blob,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_knowledge::{commit_changes, DreamTrailers};

    const PACK: &str = r#"
name = "demo"
profile = "std"
[[family]]
pattern = "package_*_installed"
name = "package_installed"
[[ordering]]
rule = "service_*_enabled"
after = "package_*_installed"
"#;

    fn rules(ids: &[&str]) -> Vec<(String, String)> {
        ids.iter()
            .map(|r| (r.to_string(), format!("Title of {r}")))
            .collect()
    }

    #[test]
    fn sections_follow_the_pack_and_name_their_provenance() {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(dir.path()).unwrap();
        let promote = DreamTrailers::new(DreamAction::Promote, 12, 345);
        let first = commit_changes(
            dir.path(),
            &[
                (
                    "skills/service_cron_enabled.sh",
                    Some(b"systemctl enable cron\n"),
                ),
                ("skills/not_in_profile.sh", Some(b"true\n")),
            ],
            &promote.message("promote"),
        )
        .unwrap()
        .after;
        let second = commit_changes(
            dir.path(),
            &[(
                "skills/package_cron_installed.sh",
                Some(b"apt-get install -y cron\n"),
            )],
            "by hand",
        )
        .unwrap()
        .after;
        let main = MainTree::open(dir.path()).unwrap();
        let skills = SkillsOnMain::read(&main).unwrap();
        let pack = SkillPack::parse(PACK).unwrap();
        let profile = rules(&["service_cron_enabled", "sshd_x", "package_cron_installed"]);
        let bundle = build(&pack, "std", &profile, &skills).unwrap();

        assert_eq!(bundle.main_commit, second.to_string());
        let order: Vec<&str> = bundle.sections.iter().map(|s| s.rule.as_str()).collect();
        assert_eq!(order, ["package_cron_installed", "service_cron_enabled"]);
        let service = bundle.section("service_cron_enabled").unwrap();
        assert_eq!(service.title, "Title of service_cron_enabled");
        assert_eq!(service.script, "systemctl enable cron\n");
        assert_eq!(service.provenance.commit, first.to_string());
        assert_eq!(
            service.provenance.blob,
            main.blob_id("skills/service_cron_enabled.sh")
                .unwrap()
                .unwrap()
        );
        assert_eq!(
            (service.provenance.run, service.provenance.ledger),
            (Some(12), Some(345))
        );
        let package = bundle.section("package_cron_installed").unwrap();
        assert_eq!(package.provenance.commit, second.to_string());
        assert_eq!(
            (package.provenance.run, package.provenance.ledger),
            (None, None)
        );

        let again = build(&pack, "std", &profile, &SkillsOnMain::read(&main).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_vec(&bundle).unwrap(),
            serde_json::to_vec(&again).unwrap()
        );
    }

    #[test]
    fn a_revert_keeps_the_provenance_of_the_promotion_it_restores() {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(dir.path()).unwrap();
        let path = "skills/package_cron_installed.sh";
        let one = DreamTrailers::new(DreamAction::Promote, 1, 10);
        commit_changes(dir.path(), &[(path, Some(b"old\n"))], &one.message("p1")).unwrap();
        let two = DreamTrailers::new(DreamAction::Promote, 2, 20);
        commit_changes(dir.path(), &[(path, Some(b"new\n"))], &two.message("p2")).unwrap();
        let back = DreamTrailers::new(DreamAction::Revert, 3, 30);
        let reverted = commit_changes(dir.path(), &[(path, Some(b"old\n"))], &back.message("r"))
            .unwrap()
            .after;
        let main = MainTree::open(dir.path()).unwrap();
        let pack = SkillPack::parse(PACK).unwrap();
        let bundle = build(
            &pack,
            "std",
            &rules(&["package_cron_installed"]),
            &SkillsOnMain::read(&main).unwrap(),
        )
        .unwrap();
        let p = &bundle.sections[0].provenance;
        assert_eq!(
            p.commit,
            reverted.to_string(),
            "the last write is the revert"
        );
        assert_eq!((p.run, p.ledger), (Some(1), Some(10)));
    }

    #[test]
    fn a_script_that_is_not_text_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(dir.path()).unwrap();
        commit_changes(dir.path(), &[("skills/a.sh", Some(b"echo \0"))], "nul").unwrap();
        let main = MainTree::open(dir.path()).unwrap();
        let pack = SkillPack::parse(PACK).unwrap();
        let err = build(
            &pack,
            "std",
            &rules(&["a"]),
            &SkillsOnMain::read(&main).unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("skills/a.sh"), "{err}");
    }
}
