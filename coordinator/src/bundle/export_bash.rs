//! The bundle as one bash script to review and run (DESIGN H6), in the
//! manner of SCAP Security Guide's generated fix scripts: a header, then
//! one labelled section per rule in bundle order.
//!
//! Each script travels in a quoted here-document whose delimiter does not
//! occur anywhere in it (so no line of it can end the document early, and
//! nothing in it is expanded), and runs as `bash -c` with stdin empty —
//! the way the fleet ran it on its targets. A section that fails is named
//! on stderr and the others still run; the exit status is 1 when any
//! failed, after a summary.

use fleet_common::bundle::Bundle;

use super::{checked_rule, header, one_line, ExportError};

/// Runs before the sections: the runner every section calls.
const PRELUDE: &str = r#"set -u
fleet_total=__TOTAL__
fleet_failed=()

# fleet_section RULE INDEX <<'DELIMITER' ... : runs the here-document's
# script in its own bash process with stdin empty; a failure is reported
# and remembered, never fatal.
fleet_section() {
    local rule=$1 index=$2 script=''
    IFS= read -r -d '' script || true
    printf 'fleet-export: [%s/%s] %s\n' "$index" "$fleet_total" "$rule" >&2
    local rc=0
    bash -c "$script" "fleet-section-$rule" </dev/null || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf 'fleet-export: section %s FAILED (exit %s)\n' "$rule" "$rc" >&2
        fleet_failed+=("$rule")
    fi
}
"#;

const SUMMARY: &str = r#"
if [ "${#fleet_failed[@]}" -gt 0 ]; then
    printf 'fleet-export: %s of %s sections failed: %s\n' "${#fleet_failed[@]}" "$fleet_total" "${fleet_failed[*]}" >&2
    exit 1
fi
printf 'fleet-export: all %s sections succeeded\n' "$fleet_total" >&2
"#;

/// The script. `generated_by` names the tool and version in the header.
pub fn render_bash(bundle: &Bundle, generated_by: &str) -> Result<String, ExportError> {
    let total = bundle.sections.len();
    let mut out = String::from("#!/usr/bin/env bash\n");
    out.push_str(&header(
        bundle,
        generated_by,
        &[
            "",
            "Each section runs in its own bash process; a failing section is",
            "reported on stderr with its rule id and the others still run.",
            "Exit status: 0 when every section succeeded, 1 otherwise.",
        ],
    ));
    out.push('\n');
    out.push_str(&PRELUDE.replace("__TOTAL__", &total.to_string()));
    for (i, s) in bundle.sections.iter().enumerate() {
        let rule = checked_rule(&s.rule)?;
        if s.script.contains('\0') {
            return Err(ExportError::NulByte(rule.to_owned()));
        }
        let p = &s.provenance;
        let mut origin = format!("commit {} blob {}", p.commit, p.blob);
        if let Some(run) = p.run {
            origin.push_str(&format!(" run {run}"));
        }
        if let Some(ledger) = p.ledger {
            origin.push_str(&format!(" ledger #{ledger}"));
        }
        let index = i + 1;
        out.push('\n');
        out.push_str(&comment(&format!("---- [{index}/{total}] {rule}")));
        out.push_str(&comment(&format!("title: {}", s.title)));
        out.push_str(&comment(&format!("from main: {origin}")));
        let delimiter = delimiter_for(&s.script, index);
        out.push_str(&format!("fleet_section {rule} {index} <<'{delimiter}'\n"));
        out.push_str(&s.script);
        if !s.script.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&delimiter);
        out.push('\n');
    }
    out.push_str(SUMMARY);
    Ok(out)
}

fn comment(text: &str) -> String {
    format!("# {}\n", one_line(text))
}

/// A here-document delimiter that is not a substring of `script`, so no
/// line of the script equals it.
fn delimiter_for(script: &str, index: usize) -> String {
    let mut delimiter = format!("FLEET_SECTION_{index}_END");
    while script.contains(&delimiter) {
        delimiter.push_str("_X");
    }
    delimiter
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::sample as bundle;

    /// Runs `script` with bash on this host. Only for the renderer's own
    /// harmless test scripts (echo, exit): real bundles run on targets.
    fn run(script: &str) -> (i32, String, String) {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .output()
            .expect("bash");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn header_and_sections_are_labelled_in_order() {
        let b = bundle(&[
            ("a_rule", "First", "echo a\n"),
            ("b_rule", "Second", "echo b"),
        ]);
        let text = render_bash(&b, "fleet-coordinator 0.1.0").unwrap();
        assert!(text.starts_with("#!/usr/bin/env bash\n"));
        for want in [
            "# skill pack:   ssg-debian11-standard\n",
            "# profile:      xccdf_org.ssgproject.content_profile_standard\n",
            "# main commit:  0123456789abcdef0123456789abcdef01234567\n",
            "# generated by: fleet-coordinator 0.1.0\n",
            "# ---- [1/2] a_rule\n# title: First\n# from main: commit c0ffee blob b10b run 12 ledger #345\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        assert!(text.find("a_rule 1").unwrap() < text.find("b_rule 2").unwrap());
        let (code, stdout, stderr) = run(&text);
        assert_eq!((code, stdout.as_str()), (0, "a\nb\n"), "{stderr}");
        assert!(stderr.contains("all 2 sections succeeded"), "{stderr}");
    }

    #[test]
    fn a_failing_section_is_reported_and_the_others_still_run() {
        let b = bundle(&[
            ("one", "", "echo one"),
            ("broken", "", "echo half; exit 7; echo never"),
            ("three", "", "set -e; false; echo unreachable"),
            ("four", "", "echo four"),
        ]);
        let (code, stdout, stderr) = run(&render_bash(&b, "t").unwrap());
        assert_eq!(code, 1);
        assert_eq!(stdout, "one\nhalf\nfour\n");
        assert!(
            stderr.contains("section broken FAILED (exit 7)"),
            "{stderr}"
        );
        assert!(stderr.contains("section three FAILED (exit 1)"), "{stderr}");
        assert!(
            stderr.contains("2 of 4 sections failed: broken three"),
            "{stderr}"
        );
    }

    #[test]
    fn hostile_scripts_and_titles_stay_inside_their_section() {
        let hostile = "echo start\nFLEET_SECTION_1_END\necho 'still inside'\n\
                       FLEET_SECTION_1_END_X\necho $(echo expanded) `echo tick` ${BASH_VERSION:+bash}\n\
                       cat </dev/stdin\nexit 0\n";
        let b = bundle(&[
            ("evil", "Title\necho escaped-from-comment", hostile),
            ("after", "", "echo after"),
        ]);
        let text = render_bash(&b, "t").unwrap();
        assert!(!text.contains("\necho escaped-from-comment"));
        let (code, stdout, stderr) = run(&text);
        assert_eq!(code, 0, "{stderr}");
        // The script's own text ran as a script, nothing more, nothing less:
        // its delimiter look-alikes are commands that fail inside it.
        assert!(stdout.starts_with("start\nstill inside\n"), "{stdout}");
        assert!(stdout.ends_with("expanded tick bash\nafter\n"), "{stdout}");
        assert!(!stdout.contains("escaped"), "{stdout}");
    }

    #[test]
    fn the_delimiter_never_occurs_in_the_script() {
        let script = "FLEET_SECTION_3_END\nFLEET_SECTION_3_END_X_X\n";
        let d = delimiter_for(script, 3);
        assert!(!script.contains(&d), "{d}");
        assert_eq!(delimiter_for("echo", 3), "FLEET_SECTION_3_END");
    }

    #[test]
    fn bad_rule_ids_and_nul_bytes_are_refused() {
        let b = bundle(&[("a;rm -rf /", "", "true")]);
        assert!(matches!(render_bash(&b, "t"), Err(ExportError::BadRule(_))));
        let b = bundle(&[("a", "", "echo \0")]);
        assert!(matches!(render_bash(&b, "t"), Err(ExportError::NulByte(_))));
    }

    #[test]
    fn an_empty_bundle_is_a_script_that_succeeds() {
        let (code, _, stderr) = run(&render_bash(&bundle(&[]), "t").unwrap());
        assert_eq!(code, 0, "{stderr}");
    }
}
