//! The machine being hardened. Scripts run inside it, never on the agent's
//! host (DESIGN T1).

use std::time::Duration;

use super::BoxFuture;
use crate::error::AgentError;

/// Output kept per exec; more would bloat events and prompts.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// `None` when the script was killed (timeout) before exiting.
    pub exit_code: Option<i32>,
    /// Combined stdout and stderr, capped at [`MAX_OUTPUT_BYTES`].
    pub output: String,
    pub timed_out: bool,
    /// What the target's sandbox did to the script (OOM kill, pid limit,
    /// timeout, output cap), in words for the event and the next prompt.
    pub contained: Option<String>,
}

pub trait Target: Send + Sync {
    /// Records the current state as the baseline that `revert` returns to
    /// (DESIGN T3). Called once per slot before any lease.
    fn baseline(&self) -> BoxFuture<'_, Result<(), AgentError>>;
    /// Runs a script on the target within `timeout`.
    fn exec<'a>(
        &'a self,
        script: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResult, AgentError>>;
    /// Returns the target to its baseline.
    fn revert(&self) -> BoxFuture<'_, Result<(), AgentError>>;
    /// Whether the target still works after a script (boots, sshd, …).
    fn health(&self) -> BoxFuture<'_, bool>;
    /// Reads a file from the target (scan results), at most `max_bytes`.
    /// Simulated targets have no files.
    fn read_file<'a>(
        &'a self,
        path: &'a str,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, AgentError>> {
        let _ = max_bytes;
        Box::pin(async move {
            Err(AgentError::Target(format!(
                "this target cannot read files ({path})"
            )))
        })
    }
}

/// Truncates `output` to at most [`MAX_OUTPUT_BYTES`].
pub fn cap_output(mut output: String) -> String {
    truncate_utf8(&mut output, MAX_OUTPUT_BYTES);
    output
}

/// Cuts `s` to at most `max` bytes on a char boundary; true if it was cut.
pub fn truncate_utf8(s: &mut String, max: usize) -> bool {
    let kept = fleet_common::script_screen::cut_utf8(s, max).len();
    let cut = kept < s.len();
    s.truncate(kept);
    cut
}
