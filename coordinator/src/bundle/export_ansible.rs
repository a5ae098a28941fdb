//! The bundle as an Ansible playbook (DESIGN H6): one play on `all`, one
//! `ansible.builtin.raw` task per section in bundle order, run by
//! `/bin/bash` on the host, so hosts need no Python (the fleet's Debian 11
//! target image has none).
//!
//! Scripts and titles are tagged `!unsafe`, so Ansible never templates
//! them: a `{{ … }}` in a script is text, not a lookup run on the
//! controller. The YAML is written by serde, never by hand.
//!
//! A failing task fails its host's play (no `ignore_errors`): the later
//! sections are not applied to that host, and `ansible-playbook` reports
//! it and exits non-zero. Rerun with `--start-at-task` or `--skip-tags`
//! once it is fixed.

use fleet_common::bundle::Bundle;
use serde::Serialize;
use serde_norway::value::{Tag, TaggedValue};
use serde_norway::Value;

use super::{checked_rule, header, one_line, ExportError};

#[derive(Serialize)]
struct Play {
    name: String,
    hosts: &'static str,
    gather_facts: bool,
    #[serde(rename = "become")]
    escalate: bool,
    tasks: Vec<Task>,
}

#[derive(Serialize)]
struct Task {
    name: TaggedValue,
    tags: Vec<String>,
    #[serde(rename = "ansible.builtin.raw")]
    raw: TaggedValue,
    args: RawArgs,
}

#[derive(Serialize)]
struct RawArgs {
    executable: &'static str,
}

/// Text Ansible must take as it is.
fn unsafe_text(text: String) -> TaggedValue {
    TaggedValue {
        tag: Tag::new("unsafe"),
        value: Value::String(text),
    }
}

/// The playbook. `generated_by` names the tool and version in the header.
pub fn render_ansible(bundle: &Bundle, generated_by: &str) -> Result<String, ExportError> {
    let mut tasks = Vec::with_capacity(bundle.sections.len());
    for s in &bundle.sections {
        let rule = checked_rule(&s.rule)?;
        if s.script.contains('\0') {
            return Err(ExportError::NulByte(rule.to_owned()));
        }
        let name = if s.title.is_empty() {
            rule.to_owned()
        } else {
            format!("{rule}: {}", one_line(&s.title))
        };
        tasks.push(Task {
            name: unsafe_text(name),
            tags: vec![rule.to_owned()],
            raw: unsafe_text(s.script.clone()),
            args: RawArgs {
                executable: "/bin/bash",
            },
        });
    }
    let play = Play {
        name: one_line(&format!(
            "Fleet bundle {} {} (main {})",
            bundle.skill_pack,
            bundle.profile,
            super::short_commit(&bundle.main_commit)
        )),
        hosts: "all",
        gather_facts: false,
        escalate: true,
        tasks,
    };
    let mut out = String::from("---\n");
    out.push_str(&header(
        bundle,
        generated_by,
        &[
            "One raw task per rule (tagged with the rule id), run by /bin/bash:",
            "hosts need no Python. A failing task fails that host's play; the",
            "sections after it are not applied there (no ignore_errors).",
        ],
    ));
    out.push_str(&serde_norway::to_string(&[play])?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::sample as bundle;

    #[test]
    fn one_play_with_a_raw_task_per_section_in_order() {
        let b = bundle(&[
            (
                "package_cron_installed",
                "Install cron",
                "apt-get install -y cron\n",
            ),
            ("b_rule", "", "echo b"),
        ]);
        let text = render_ansible(&b, "fleet-coordinator 0.1.0").unwrap();
        assert!(text.starts_with("---\n# Remediation bundle"), "{text}");
        assert!(text.contains("# main commit:  0123456789abcdef0123456789abcdef01234567\n"));
        let doc: Value = serde_norway::from_str(&text).unwrap();
        let plays = doc.as_sequence().unwrap();
        assert_eq!(plays.len(), 1);
        let play = &plays[0];
        assert_eq!(play["hosts"], Value::from("all"));
        assert_eq!(play["gather_facts"], Value::Bool(false));
        assert_eq!(play["become"], Value::Bool(true));
        assert!(play.get("ignore_errors").is_none());
        let tasks = play["tasks"].as_sequence().unwrap();
        assert_eq!(tasks.len(), 2);
        let first = &tasks[0];
        let tagged = |v: &Value| match v {
            Value::Tagged(t) => {
                assert_eq!(t.tag, Tag::new("unsafe"));
                t.value.as_str().unwrap().to_owned()
            }
            other => panic!("not tagged !unsafe: {other:?}"),
        };
        assert_eq!(
            tagged(&first["name"]),
            "package_cron_installed: Install cron"
        );
        assert_eq!(
            tagged(&first["ansible.builtin.raw"]),
            "apt-get install -y cron\n"
        );
        assert_eq!(first["args"]["executable"], Value::from("/bin/bash"));
        assert_eq!(first["tags"][0], Value::from("package_cron_installed"));
        assert!(first.get("ignore_errors").is_none());
        assert_eq!(tagged(&tasks[1]["name"]), "b_rule");
    }

    #[test]
    fn hostile_text_stays_a_string() {
        let script = "echo '{{ lookup(\"pipe\", \"id\") }}'\n- name: injected\n  hosts: all\n\"quoted\" 'single' \\ # not a comment\n";
        let b = bundle(&[("evil", "T\n- hosts: all\n{{ x }}", script)]);
        let text = render_ansible(&b, "t").unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        let tasks = doc[0]["tasks"].as_sequence().unwrap();
        assert_eq!(tasks.len(), 1);
        match (&tasks[0]["ansible.builtin.raw"], &tasks[0]["name"]) {
            (Value::Tagged(script_value), Value::Tagged(name)) => {
                assert_eq!(script_value.value.as_str(), Some(script));
                assert_eq!(name.value.as_str(), Some("evil: T - hosts: all {{ x }}"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_rule_ids_are_refused() {
        let b = bundle(&[("x: y", "", "true")]);
        assert!(matches!(
            render_ansible(&b, "t"),
            Err(ExportError::BadRule(_))
        ));
    }
}
