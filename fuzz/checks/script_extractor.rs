//! The script extractor on any text, its script through the script screen:
//! never a panic; a script is non-empty, ends in one newline, is made of
//! consecutive lines of the answer (the last one trimmed at its end) with no
//! fence inside, and extracting it again from a bash fence gives it back; a
//! refusal names a line of the script, cut to its limit.

use fleet_agent::llm::{extract_script, ExtractError};
use fleet_common::script_screen::{screen, MAX_REFUSAL_LINE_BYTES};

pub fn check(data: &[u8]) {
    let Ok(answer) = std::str::from_utf8(data) else {
        return;
    };
    let script = match extract_script(answer) {
        Ok(script) => script,
        Err(ExtractError::Empty) => {
            assert!(answer.contains("```"), "an empty block is still a fence");
            return;
        }
        Err(ExtractError::NoScript) => return,
    };
    assert!(!script.trim().is_empty());
    assert!(script.ends_with('\n') && !script.ends_with("\n\n"));
    let body: Vec<&str> = script.trim_end_matches('\n').split('\n').collect();
    assert!(
        body.iter().all(|l| !l.trim_start().starts_with("```")),
        "no fence inside a script"
    );
    let lines: Vec<&str> = answer.lines().collect();
    let (last, whole) = body.split_last().expect("a script has a line");
    let found = lines
        .windows(body.len())
        .any(|w| w[..whole.len()] == *whole && w[whole.len()].trim_end().starts_with(last));
    assert!(found, "the script is consecutive lines of the answer");
    if !script.contains('\r') {
        let again = extract_script(&format!("```bash\n{script}```"));
        assert_eq!(
            again.as_deref(),
            Ok(script.as_str()),
            "extraction is stable"
        );
    }

    if let Err(refusal) = screen(&script) {
        assert!(refusal.line.len() <= MAX_REFUSAL_LINE_BYTES);
        assert!(
            script.contains(&refusal.line),
            "a refusal quotes the script"
        );
        assert!(!refusal.rule.is_empty());
    }
}
