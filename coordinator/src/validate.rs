//! Validation of a run submission. Every message says what is wrong and
//! what is allowed, because it goes back verbatim to the person submitting.

use std::collections::HashSet;

use fleet_common::api::SubmitRun;
use fleet_common::task::Budgets;

use crate::packs::SkillPacks;

/// Highest run priority. Queue scores are `priority * 2^32 + task`, which
/// must stay exact in a double (2^53).
pub const MAX_PRIORITY: u32 = 1_000_000;

const MAX_RULE_ID_LEN: usize = 200;
const MAX_PROFILE_LEN: usize = 200;

pub fn validate_submission(req: &SubmitRun, packs: &SkillPacks) -> Result<(), String> {
    packs.get(&req.skill_pack).map_err(|e| e.to_string())?;

    // No rules means every rule of the profile; the planner resolves that
    // from the pack's SCAP content (and refuses it for packs without).
    if req.rules.len() > SubmitRun::MAX_RULES {
        return Err(format!(
            "too many rules: {} submitted, at most {} per run",
            req.rules.len(),
            SubmitRun::MAX_RULES
        ));
    }
    if let Some(bad) = req.rules.iter().find(|r| !is_rule_id(r)) {
        return Err(format!(
            "rule id {:?} is not valid: rule ids are 1-{MAX_RULE_ID_LEN} characters of [A-Za-z0-9_.-]",
            truncate(bad, 80)
        ));
    }
    let mut seen = HashSet::with_capacity(req.rules.len());
    if let Some(dup) = req.rules.iter().find(|r| !seen.insert(r.as_str())) {
        return Err(format!(
            "duplicate rule id {dup:?}: each rule may appear once per run"
        ));
    }
    if let Some(profile) = &req.profile {
        if !is_profile(profile) {
            return Err(format!(
                "profile {:?} is not valid: profiles are 1-{MAX_PROFILE_LEN} characters of [A-Za-z0-9_.:-]",
                truncate(profile, 80)
            ));
        }
    }
    let b = &req.budgets;
    if !(1..=Budgets::MAX_ATTEMPTS_LIMIT).contains(&b.max_attempts) {
        return Err(format!(
            "budgets.max_attempts is {}: it must be between 1 and {}",
            b.max_attempts,
            Budgets::MAX_ATTEMPTS_LIMIT
        ));
    }
    if !(1..=Budgets::WALL_TIME_LIMIT_S).contains(&b.wall_time_s) {
        return Err(format!(
            "budgets.wall_time_s is {}: it must be between 1 and {} seconds",
            b.wall_time_s,
            Budgets::WALL_TIME_LIMIT_S
        ));
    }
    if req.priority > MAX_PRIORITY {
        return Err(format!(
            "priority is {}: it must be between 0 and {MAX_PRIORITY} (lower runs first)",
            req.priority
        ));
    }
    Ok(())
}

/// `^[A-Za-z0-9_.-]{1,200}$`
fn is_rule_id(s: &str) -> bool {
    (1..=MAX_RULE_ID_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// XCCDF profile ids look like `xccdf_org.ssgproject.content_profile_stig`.
fn is_profile(s: &str) -> bool {
    (1..=MAX_PROFILE_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

/// Echoing a megabyte of garbage back helps nobody.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packs() -> (SkillPacks, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("validate-{}", uuid::Uuid::new_v4()));
        for name in ["debian11", "rhel9"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(
                dir.join(name).join("pack.toml"),
                format!("name = \"{name}\"\nprofile = \"standard\"\n"),
            )
            .unwrap();
        }
        (SkillPacks::new(&dir), dir)
    }

    fn req(rules: &[&str]) -> SubmitRun {
        serde_json::from_value(serde_json::json!({
            "skill_pack": "debian11",
            "rules": rules,
        }))
        .unwrap()
    }

    fn err(r: &SubmitRun, p: &SkillPacks) -> String {
        validate_submission(r, p).unwrap_err()
    }

    #[test]
    fn messages_say_what_is_wrong_and_what_is_allowed() {
        let (p, dir) = packs();
        assert!(validate_submission(&req(&["a", "b"]), &p).is_ok());

        let mut r = req(&["a"]);
        r.skill_pack = "suse".into();
        let m = err(&r, &p);
        assert!(
            m.contains("unknown skill pack \"suse\"") && m.contains("debian11, rhel9"),
            "{m}"
        );

        r.skill_pack = "../etc".into();
        assert!(err(&r, &p).contains("[A-Za-z0-9._-]"));

        // Empty means "the whole profile"; the planner resolves it.
        assert!(validate_submission(&req(&[]), &p).is_ok());

        let many: Vec<String> = (0..=SubmitRun::MAX_RULES)
            .map(|i| format!("r{i}"))
            .collect();
        let mut r = req(&[]);
        r.rules = many;
        assert!(err(&r, &p).contains("at most 100000"));

        let m = err(&req(&["a", "b", "a", "b"]), &p);
        assert!(m.contains("duplicate rule id \"a\""), "{m}");

        let m = err(&req(&["ok", "bad rule"]), &p);
        assert!(
            m.contains("\"bad rule\"") && m.contains("[A-Za-z0-9_.-]"),
            "{m}"
        );
        assert!(err(&req(&[&"x".repeat(201)]), &p).contains("1-200"));

        let mut r = req(&["a"]);
        r.profile = Some("stig; rm -rf /".into());
        assert!(err(&r, &p).contains("profiles are"));

        let mut r = req(&["a"]);
        r.budgets.max_attempts = 0;
        assert!(err(&r, &p).contains("between 1 and 50"));
        r.budgets.max_attempts = 51;
        assert!(err(&r, &p).contains("max_attempts is 51"));

        let mut r = req(&["a"]);
        r.budgets.wall_time_s = 0;
        assert!(err(&r, &p).contains("wall_time_s is 0"));
        r.budgets.wall_time_s = Budgets::WALL_TIME_LIMIT_S + 1;
        assert!(err(&r, &p).contains("between 1 and 86400"));

        let mut r = req(&["a"]);
        r.priority = MAX_PRIORITY + 1;
        assert!(err(&r, &p).contains("priority"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_packs_installed_says_where_it_looked() {
        let p = SkillPacks::new("/nonexistent/packs");
        let m = err(&req(&["a"]), &p);
        assert!(
            m.contains("no skill packs are installed under /nonexistent/packs"),
            "{m}"
        );
    }
}
