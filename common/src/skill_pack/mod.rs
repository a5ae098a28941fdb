//! A skill pack (`<dir>/pack.toml` plus prompt templates): which SCAP
//! content and profile it remediates, how its rules group into families,
//! ordering constraints, health checks, prompt templates and the rules that
//! always go to a human, by rule id (`always_escalate`) or by what a fix
//! touches (`[escalate_touching]`, added to the dream stage's defaults).
//!
//! Families are fine-grained (DESIGN D5): the first `[[family]]` whose glob
//! matches a rule id names its family; a rule no pattern matches is its own
//! family. An `[[ordering]]` entry holds a rule until the rules matching
//! `after` have at most `remaining` unfinished, e.g. `audit_rules_immutable`
//! only after the rest of the audit rules.
//!
//! A `[[requires]]` entry says which target class a rule needs (issue 24):
//! the first entry whose glob matches names it, and a rule no entry matches
//! needs only a container. A rule that needs a `vm` is leased only to agents
//! whose targets are VMs, and recorded `needs_target` when none is live. A
//! `[[health]]` check may carry `targets = ["vm"]` to run only there.

mod dream;

use std::path::{Path, PathBuf};

use glob::Pattern;
use serde::Deserialize;
use thiserror::Error;

use crate::target_class::TargetClass;
use crate::task::{Checks, HealthCheck};

pub use dream::DreamSettings;

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
    content: Option<ContentFile>,
    #[serde(default)]
    family: Vec<FamilyFile>,
    #[serde(default)]
    ordering: Vec<OrderingFile>,
    #[serde(default)]
    requires: Vec<RequiresFile>,
    #[serde(default)]
    health: Vec<HealthCheck>,
    #[serde(default)]
    prompts: PromptsFile,
    /// Rule globs whose fixes a human always decides (e.g. boot loader).
    #[serde(default)]
    always_escalate: Vec<String>,
    #[serde(default)]
    dream: DreamSettings,
    #[serde(default)]
    escalate_touching: EscalateTouchingFile,
}

/// `[escalate_touching]`: what a candidate may not touch without a human,
/// on top of the dream stage's defaults (DESIGN D7, amended).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateTouchingFile {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commands: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
}

/// A pack's additions to the content-based escalation list.
#[derive(Debug, Clone, Default)]
pub struct EscalateTouching {
    /// Globs of paths a write to which (or under which) escalates.
    pub paths: Vec<Pattern>,
    /// Command names whose every invocation escalates.
    pub commands: Vec<String>,
    /// Services whose state change (stop, disable, mask, ...) escalates.
    pub services: Vec<String>,
}

/// `[content]`: the SCAP source datastream the pack's rules come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentFile {
    /// Path on the target (and, for the catalog, on the coordinator host).
    datastream: String,
    #[serde(default = "default_rule_prefix")]
    rule_prefix: String,
}

fn default_rule_prefix() -> String {
    "xccdf_org.ssgproject.content_rule_".into()
}

/// `[prompts]`: template files relative to the pack directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptsFile {
    worker: Option<String>,
    reflector: Option<String>,
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

/// `[[requires]]`: the target class the rules matching `rule` need.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiresFile {
    rule: String,
    /// A `TargetClass` label (`container`, `vm`), checked at load.
    target: String,
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

/// Prompt templates as loaded; `None` means the agent's built-in one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptTemplates {
    pub worker: Option<String>,
    pub reflector: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SkillPack {
    pub name: String,
    pub description: String,
    pub profile: String,
    /// Datastream, rule prefix and health checks, as tasks carry them.
    pub checks: Checks,
    families: Vec<(Pattern, String)>,
    pub ordering: Vec<Ordering>,
    /// `[[requires]]` in file order: the first match names a rule's need.
    requires: Vec<(Pattern, TargetClass)>,
    pub prompts: PromptTemplates,
    always_escalate: Vec<Pattern>,
    escalate_touching: EscalateTouching,
    prompt_files: PromptsFile,
    /// Limits of a dream pass over the pack's runs.
    pub dream: DreamSettings,
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
    /// Reads `pack.toml` and the prompt templates it names.
    pub fn load(dir: &Path) -> Result<Self, SkillPackError> {
        let path = dir.join("pack.toml");
        let text = read(&path)?;
        let mut pack =
            Self::parse(&text).map_err(|message| SkillPackError::Invalid { path, message })?;
        let template = |name: &Option<String>| -> Result<Option<String>, SkillPackError> {
            let Some(name) = name else { return Ok(None) };
            if name.is_empty() || name.starts_with('/') || name.split('/').any(|c| c == "..") {
                return Err(SkillPackError::Invalid {
                    path: dir.join("pack.toml"),
                    message: format!("prompt template {name:?} must be a path inside the pack"),
                });
            }
            read(&dir.join(name)).map(Some)
        };
        pack.prompts = PromptTemplates {
            worker: template(&pack.prompt_files.worker)?,
            reflector: template(&pack.prompt_files.reflector)?,
        };
        pack.checks.worker_prompt = pack.prompts.worker.clone();
        pack.checks.reflector_prompt = pack.prompts.reflector.clone();
        Ok(pack)
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
        let requires = file
            .requires
            .iter()
            .map(|r| {
                let class = TargetClass::parse(&r.target).ok_or_else(|| {
                    format!(
                        "requires rule {:?}: unknown target {:?} (known: {}, {})",
                        r.rule,
                        r.target,
                        TargetClass::Container,
                        TargetClass::Vm
                    )
                })?;
                Ok((pattern(&r.rule)?, class))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let always_escalate = file
            .always_escalate
            .iter()
            .map(|p| pattern(p))
            .collect::<Result<Vec<_>, String>>()?;
        file.dream.check()?;
        let escalate_touching = escalate_touching(&file.escalate_touching)?;
        let mut names = std::collections::HashSet::new();
        for h in &file.health {
            if h.command.trim().is_empty() || !names.insert(h.name.as_str()) {
                return Err(format!(
                    "health check {:?} needs a unique name and a command",
                    h.name
                ));
            }
        }
        let checks = Checks {
            datastream: file.content.as_ref().map(|c| c.datastream.clone()),
            rule_prefix: file
                .content
                .as_ref()
                .map(|c| c.rule_prefix.clone())
                .unwrap_or_default(),
            health: file.health,
            worker_prompt: None,
            reflector_prompt: None,
        };
        Ok(Self {
            name: file.name,
            description: file.description,
            profile: file.profile,
            checks,
            families,
            ordering,
            requires,
            prompts: PromptTemplates::default(),
            always_escalate,
            escalate_touching,
            prompt_files: file.prompts,
            dream: file.dream,
        })
    }

    /// Whether a fix for `rule` must always be decided by a human.
    pub fn always_escalates(&self, rule: &str) -> bool {
        self.always_escalate.iter().any(|p| p.matches(rule))
    }

    /// The pack's additions to what escalates a candidate that touches it.
    pub fn escalate_touching(&self) -> &EscalateTouching {
        &self.escalate_touching
    }

    /// The target class `rule` needs: the first `[[requires]]` whose glob
    /// matches it, else a container (every agent serves it).
    pub fn target_need(&self, rule: &str) -> TargetClass {
        self.requires
            .iter()
            .find(|(p, _)| p.matches(rule))
            .map_or(TargetClass::Container, |(_, class)| *class)
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

/// Paths are absolute globs (or `*`-led, e.g. `*authorized_keys`);
/// commands and services are plain names.
fn escalate_touching(f: &EscalateTouchingFile) -> Result<EscalateTouching, String> {
    let paths = f
        .paths
        .iter()
        .map(|p| {
            if !(p.starts_with('/') || p.starts_with('*')) {
                return Err(format!(
                    "escalate_touching path {p:?} must be absolute (or start with *)"
                ));
            }
            Pattern::new(p).map_err(|e| format!("bad glob {p:?}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let name = |kind: &str, n: &String| {
        let ok = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if ok {
            Ok(n.clone())
        } else {
            Err(format!(
                "escalate_touching {kind} {n:?} must be a plain name"
            ))
        }
    };
    Ok(EscalateTouching {
        paths,
        commands: f
            .commands
            .iter()
            .map(|c| name("command", c))
            .collect::<Result<_, _>>()?,
        services: f
            .services
            .iter()
            .map(|s| name("service", s))
            .collect::<Result<_, _>>()?,
    })
}

fn read(path: &Path) -> Result<String, SkillPackError> {
    std::fs::read_to_string(path).map_err(|source| SkillPackError::Read {
        path: path.to_owned(),
        source,
    })
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

    const SCAP_PACK: &str = r#"
name = "scap"
profile = "xccdf_org.ssgproject.content_profile_standard"
always_escalate = ["grub2_*"]
[content]
datastream = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml"
[[health]]
name = "shell"
command = "true"
"#;

    #[test]
    fn content_and_health_become_the_task_checks() {
        let p = SkillPack::parse(SCAP_PACK).unwrap();
        assert_eq!(
            p.checks.datastream.as_deref(),
            Some("/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml")
        );
        assert_eq!(
            p.checks.xccdf_rule_id("package_audit_installed"),
            "xccdf_org.ssgproject.content_rule_package_audit_installed"
        );
        assert_eq!(p.checks.health.len(), 1);
        assert_eq!(p.checks.health[0].timeout_s, 10);
        assert!(p.always_escalates("grub2_password"));
        assert!(!p.always_escalates("sshd_disable_root_login"));
    }

    #[test]
    fn duplicate_or_empty_health_checks_are_refused() {
        let dup = format!("{SCAP_PACK}[[health]]\nname = \"shell\"\ncommand = \"id\"\n");
        assert!(SkillPack::parse(&dup).unwrap_err().contains("shell"));
        let empty = SCAP_PACK.replace("command = \"true\"", "command = \" \"");
        assert!(SkillPack::parse(&empty).is_err());
    }

    #[test]
    fn prompt_templates_load_from_inside_the_pack_only() {
        let dir = std::env::temp_dir().join(format!("pack-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("prompts")).unwrap();
        std::fs::write(dir.join("prompts/worker.md"), "Fix {rule}").unwrap();
        let toml = format!("{SCAP_PACK}[prompts]\nworker = \"prompts/worker.md\"\n");
        std::fs::write(dir.join("pack.toml"), &toml).unwrap();
        let p = SkillPack::load(&dir).unwrap();
        assert_eq!(p.prompts.worker.as_deref(), Some("Fix {rule}"));
        assert_eq!(p.prompts.reflector, None);
        let escape = toml.replace("prompts/worker.md", "../../etc/passwd");
        std::fs::write(dir.join("pack.toml"), escape).unwrap();
        let err = SkillPack::load(&dir).unwrap_err().to_string();
        assert!(err.contains("inside the pack"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn escalate_touching_adds_paths_commands_and_services() {
        let toml = format!(
            "{SCAP_PACK}[escalate_touching]\npaths = [\"/etc/security/pwquality.conf\"]\n\
             commands = [\"authconfig\"]\nservices = [\"sssd\"]\n"
        );
        let p = SkillPack::parse(&toml).unwrap();
        let t = p.escalate_touching();
        assert!(t.paths[0].matches("/etc/security/pwquality.conf"));
        assert_eq!(
            (&t.commands[..], &t.services[..]),
            (&["authconfig".to_owned()][..], &["sssd".to_owned()][..])
        );
        assert!(SkillPack::parse(SCAP_PACK)
            .unwrap()
            .escalate_touching()
            .paths
            .is_empty());
        for bad in [
            "paths = [\"etc/shadow\"]",
            "paths = [\"/etc/[\"]",
            "commands = [\"rm -rf\"]",
            "services = [\"\"]",
            "surprise = 1",
        ] {
            let toml = format!("{SCAP_PACK}[escalate_touching]\n{bad}\n");
            assert!(SkillPack::parse(&toml).is_err(), "{bad}");
        }
    }

    #[test]
    fn requires_names_the_target_class_a_rule_needs_first_match_first() {
        let toml = format!(
            "{SCAP_PACK}[[requires]]\nrule = \"sysctl_net_*\"\ntarget = \"container\"\n\
             [[requires]]\nrule = \"sysctl_*\"\ntarget = \"vm\"\n\
             [[requires]]\nrule = \"service_*\"\ntarget = \"vm\"\n\
             [[health]]\nname = \"systemd\"\ncommand = \"systemctl is-system-running\"\n\
             targets = [\"vm\"]\n"
        );
        let p = SkillPack::parse(&toml).unwrap();
        assert_eq!(
            p.target_need("sysctl_kernel_randomize_va_space"),
            TargetClass::Vm
        );
        assert_eq!(p.target_need("service_cron_enabled"), TargetClass::Vm);
        assert_eq!(
            p.target_need("sysctl_net_ipv4_ip_forward"),
            TargetClass::Container,
            "an earlier entry makes an exception"
        );
        assert_eq!(
            p.target_need("package_audit_installed"),
            TargetClass::Container
        );
        let names = |class| -> Vec<String> {
            p.checks
                .health_for(class)
                .into_iter()
                .map(|h| h.name)
                .collect()
        };
        assert_eq!(names(TargetClass::Container), ["shell"]);
        assert_eq!(names(TargetClass::Vm), ["shell", "systemd"]);
        // Without [[requires]], every rule needs only a container.
        let plain = SkillPack::parse(SCAP_PACK).unwrap();
        assert_eq!(plain.target_need("sysctl_x"), TargetClass::Container);
    }

    #[test]
    fn an_unknown_target_class_is_a_clear_load_error() {
        let bad = format!("{SCAP_PACK}[[requires]]\nrule = \"sysctl_*\"\ntarget = \"VM\"\n");
        let err = SkillPack::parse(&bad).unwrap_err();
        assert!(
            err.contains("sysctl_*") && err.contains("unknown target \"VM\"") && err.contains("vm"),
            "{err}"
        );
        let bad_check = format!(
            "{SCAP_PACK}[[health]]\nname = \"systemd\"\ncommand = \"true\"\ntargets = [\"kvm\"]\n"
        );
        let err = SkillPack::parse(&bad_check).unwrap_err();
        assert!(err.contains("kvm") && err.contains("vm"), "{err}");
        let no_target = format!("{SCAP_PACK}[[requires]]\nrule = \"sysctl_*\"\n");
        assert!(SkillPack::parse(&no_target).unwrap_err().contains("target"));
        let bad_glob = format!("{SCAP_PACK}[[requires]]\nrule = \"[\"\ntarget = \"vm\"\n");
        assert!(SkillPack::parse(&bad_glob).is_err());
    }

    #[test]
    fn unknown_fields_are_an_error() {
        assert!(SkillPack::parse("name='x'\nprofile='p'\nsurprise=1").is_err());
    }

    #[test]
    fn dream_limits_default_and_are_checked() {
        let p = SkillPack::parse("name='x'\nprofile='p'").unwrap();
        assert_eq!(p.dream, DreamSettings::default());
        assert_eq!(p.dream.max_not_comparable, 0.2);
        assert_eq!(p.dream.max_promotions, 25);
        let set = SkillPack::parse("name='x'\nprofile='p'\n[dream]\nmax_promotions = 3").unwrap();
        assert_eq!(set.dream.max_promotions, 3);
        assert_eq!(set.dream.max_not_comparable, 0.2, "the rest stay default");
        let bad = SkillPack::parse("name='x'\nprofile='p'\n[dream]\nmax_not_comparable = 20");
        assert!(bad.unwrap_err().contains("between 0 and 1"));
    }
}
