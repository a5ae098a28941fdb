//! The `ssg` brain: the SCAP content's own bash remediation for the rule,
//! generated on the target (`oscap xccdf generate fix`) so it matches the
//! content the Evaluator judges by. A rule without one escalates as
//! `no_fix_available`.
//!
//! The profile-wide script is generated once per (datastream, profile) and
//! kept for the machine's life: the content is part of the machine's
//! baseline, which every attempt starts from, so the script cannot differ
//! between attempts (about a second of oscap per attempt saved).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::machine::Machine;
use super::shell::quote;
use crate::error::AgentError;
use crate::workbench::{BoxFuture, Brain, Prompt};

const FIX_PATH: &str = "/var/tmp/fleet-fix/profile.sh";
const GENERATE_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_FIX_BYTES: u64 = 64 * 1024 * 1024;

/// Generated profile fixes by (datastream, profile).
type FixCache = HashMap<(String, String), Arc<str>>;

pub struct SsgBrain {
    machine: Arc<Machine>,
    profile_fixes: Mutex<FixCache>,
}

impl SsgBrain {
    pub fn new(machine: Arc<Machine>) -> Self {
        Self {
            machine,
            profile_fixes: Mutex::new(HashMap::new()),
        }
    }

    async fn propose_fix(&self, prompt: &Prompt) -> Result<String, AgentError> {
        let task = &prompt.task;
        let datastream = task.checks.datastream.as_deref().ok_or_else(|| {
            AgentError::Brain(format!(
                "skill pack {} has no SCAP datastream",
                task.skill_pack
            ))
        })?;
        let profile_fix = self.profile_fix(datastream, &task.profile).await?;
        let rule = task.checks.xccdf_rule_id(&task.rule);
        rule_fix(&profile_fix, &rule).ok_or(AgentError::NoFixAvailable)
    }

    /// The profile's generated fix, from the cache or the machine. The lock
    /// is held while generating, so one machine never generates twice;
    /// failures are not cached.
    async fn profile_fix(&self, datastream: &str, profile: &str) -> Result<Arc<str>, AgentError> {
        let mut cache = self.profile_fixes.lock().await;
        let key = (datastream.to_owned(), profile.to_owned());
        if let Some(fix) = cache.get(&key) {
            return Ok(fix.clone());
        }
        let fix: Arc<str> = self.generate(datastream, profile).await?.into();
        cache.insert(key, fix.clone());
        Ok(fix)
    }

    async fn generate(&self, datastream: &str, profile: &str) -> Result<String, AgentError> {
        // oscap has no per-rule fix generation (it ignores --rule here), so
        // the profile's script is generated and the rule's section cut out.
        let script = format!(
            "mkdir -p /var/tmp/fleet-fix && oscap xccdf generate fix --fix-type bash --profile {profile} --output {out} {ds} 2>&1 | tail -c 2000",
            profile = quote(profile),
            out = quote(FIX_PATH),
            ds = quote(datastream),
        );
        let out = self
            .machine
            .exec(&script, GENERATE_TIMEOUT)
            .await
            .map_err(|e| AgentError::Brain(e.to_string()))?;
        if out.exit_code != Some(0) {
            return Err(AgentError::Brain(format!(
                "oscap xccdf generate fix exited with {:?}: {}",
                out.exit_code,
                out.output.trim()
            )));
        }
        let bytes = self
            .machine
            .read_file(FIX_PATH, MAX_FIX_BYTES)
            .await
            .map_err(|e| AgentError::Brain(e.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The section of a profile's generated fix script for `rule`, or `None`
/// when the content has no bash fix for it. OpenSCAP 1.4 wraps each
/// section in a subshell whose `(` ends the progress line and whose `)`
/// starts the END line, so both lines are kept, minus their comments.
pub fn rule_fix(profile_fix: &str, rule: &str) -> Option<String> {
    let quoted = format!("'{rule}'");
    let end_marker = format!("# END fix for {quoted}");
    let mut lines = profile_fix.lines();
    lines.find(|l| l.starts_with("# BEGIN fix (") && l.ends_with(&format!(" for {quoted}")))?;
    let mut body = Vec::new();
    for line in lines {
        if let Some(i) = line.find(&end_marker) {
            body.push(&line[..i]);
            break;
        }
        if !line.starts_with("####") {
            body.push(line);
        }
    }
    let body = body.join("\n");
    if body.contains("IS MISSING!") || body.trim().is_empty() {
        return None;
    }
    Some(format!("#!/usr/bin/env bash\n{}\n", body.trim()))
}

impl Brain for SsgBrain {
    fn propose<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<String, AgentError>> {
        Box::pin(self.propose_fix(prompt))
    }
}

#[cfg(test)]
mod tests {
    use super::rule_fix;

    /// OpenSCAP 1.3 layout.
    const PROFILE_FIX_13: &str = "#!/usr/bin/env bash
###############################################################################
# BEGIN fix (1 / 2) for 'xccdf_r_partition_for_home'
###############################################################################
(>&2 echo \"Remediating rule 1/2: 'xccdf_r_partition_for_home'\")
(>&2 echo \"FIX FOR THIS RULE 'xccdf_r_partition_for_home' IS MISSING!\")

# END fix for 'xccdf_r_partition_for_home'

###############################################################################
# BEGIN fix (2 / 2) for 'xccdf_r_sshd_disable_root_login'
###############################################################################
(>&2 echo \"Remediating rule 2/2: 'xccdf_r_sshd_disable_root_login'\")
sed -i 's/^PermitRootLogin.*/PermitRootLogin no/' /etc/ssh/sshd_config

# END fix for 'xccdf_r_sshd_disable_root_login'
";

    /// OpenSCAP 1.4 layout: each section is a subshell.
    const PROFILE_FIX_14: &str = "#!/usr/bin/env bash
###############################################################################
# BEGIN fix (1 / 2) for 'xccdf_r_file_permissions_systemmap'
###############################################################################
(>&2 echo \"Remediating rule 1/2: 'xccdf_r_file_permissions_systemmap'\"); (
(>&2 echo \"FIX FOR THIS RULE 'xccdf_r_file_permissions_systemmap' IS MISSING!\")

) # END fix for 'xccdf_r_file_permissions_systemmap'

###############################################################################
# BEGIN fix (2 / 2) for 'xccdf_r_ensure_logrotate_activated'
###############################################################################
(>&2 echo \"Remediating rule 2/2: 'xccdf_r_ensure_logrotate_activated'\"); (
grep -q \"^daily$\" /etc/logrotate.conf || echo daily >> /etc/logrotate.conf

) # END fix for 'xccdf_r_ensure_logrotate_activated'
";

    #[test]
    fn the_rules_section_is_cut_out_and_missing_fixes_are_none() {
        let fix = rule_fix(PROFILE_FIX_13, "xccdf_r_sshd_disable_root_login").unwrap();
        assert!(fix.contains("PermitRootLogin no"), "{fix}");
        assert!(!fix.contains("partition"), "{fix}");
        assert_eq!(rule_fix(PROFILE_FIX_13, "xccdf_r_partition_for_home"), None);
        assert_eq!(rule_fix(PROFILE_FIX_13, "xccdf_r_unknown"), None);
        // A prefix of another rule's id is not that rule.
        assert_eq!(rule_fix(PROFILE_FIX_13, "xccdf_r_sshd_disable_root"), None);
    }

    #[test]
    fn a_subshell_section_keeps_both_parentheses() {
        let fix = rule_fix(PROFILE_FIX_14, "xccdf_r_ensure_logrotate_activated").unwrap();
        assert_eq!(fix.matches('(').count(), fix.matches(')').count(), "{fix}");
        assert!(fix.contains("echo daily"), "{fix}");
        let status = std::process::Command::new("bash")
            .args(["-n", "-c", &fix])
            .status()
            .unwrap();
        assert!(status.success(), "not valid bash:\n{fix}");
        assert_eq!(
            rule_fix(PROFILE_FIX_14, "xccdf_r_file_permissions_systemmap"),
            None
        );
    }

    /// Rules 12–14 of `oscap xccdf generate fix --fix-type bash --profile
    /// standard` on the Debian 11 target (OpenSCAP 1.4.2, ssg-debian
    /// 0.1.65), verbatim: a fix behind a platform conditional between two
    /// rules the content has no bash fix for.
    const REAL_EXCERPT: &str = include_str!("testdata/debian11-standard-fix-excerpt.sh");

    #[test]
    fn a_real_generated_script_yields_the_fix_with_its_platform_conditional() {
        let p = "xccdf_org.ssgproject.content_rule_";
        let fix = rule_fix(REAL_EXCERPT, &format!("{p}ensure_logrotate_activated")).unwrap();
        assert!(fix.contains("if [ ! -f /.dockerenv ]"), "{fix}");
        assert!(
            fix.contains("/usr/sbin/logrotate $LOGROTATE_CONF_FILE"),
            "{fix}"
        );
        assert!(fix.trim_end().ends_with(')'), "{fix}");
        assert!(
            !fix.contains("systemmap") && !fix.contains("rsyslog"),
            "{fix}"
        );
        let status = std::process::Command::new("bash")
            .args(["-n", "-c", &fix])
            .status()
            .unwrap();
        assert!(status.success(), "not valid bash:\n{fix}");
        for missing in ["rsyslog_files_permissions", "file_permissions_systemmap"] {
            assert_eq!(rule_fix(REAL_EXCERPT, &format!("{p}{missing}")), None);
        }
    }
}
