//! The script in a Worker answer: the first fenced code block marked as a
//! shell (`bash`, `sh`, `shell`, or unmarked). Models wrap scripts in prose;
//! anything outside the fence is ignored, and an answer without a fence is
//! not a script.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("the answer holds no fenced shell block")]
    NoScript,
    #[error("the answer's shell block is empty")]
    Empty,
}

pub fn extract_script(answer: &str) -> Result<String, ExtractError> {
    let mut lines = answer.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let lang = lang.trim().to_ascii_lowercase();
        let is_shell = matches!(lang.as_str(), "" | "bash" | "sh" | "shell" | "console");
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.trim_start().starts_with("```"))
            .collect();
        if !is_shell {
            continue;
        }
        let script = body.join("\n");
        if script.trim().is_empty() {
            return Err(ExtractError::Empty);
        }
        return Ok(format!("{}\n", script.trim_end()));
    }
    Err(ExtractError::NoScript)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_shell_fence_is_the_script() {
        let a = "Here you go:\n```python\nprint(1)\n```\n```bash\napt-get install -y cron\n```\nthen\n```sh\nrm -rf /\n```";
        assert_eq!(extract_script(a).unwrap(), "apt-get install -y cron\n");
        assert_eq!(extract_script("```\ntrue\n```").unwrap(), "true\n");
    }

    #[test]
    fn prose_and_empty_fences_are_not_scripts() {
        assert_eq!(
            extract_script("just run apt-get install cron"),
            Err(ExtractError::NoScript)
        );
        assert_eq!(extract_script("```bash\n\n```"), Err(ExtractError::Empty));
        assert_eq!(extract_script(""), Err(ExtractError::NoScript));
        // An unterminated fence still yields what it holds.
        assert_eq!(extract_script("```bash\necho hi").unwrap(), "echo hi\n");
    }
}
