//! The one error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong with a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A Docker engine API call failed.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),

    /// DESIGN T3: a run refuses to start on a target with no baseline.
    #[error("target has no baseline")]
    NoBaseline,

    /// An agent id that cannot be part of a container or image name.
    #[error("invalid agent id {0:?}: expected [A-Za-z0-9._-]{{1,64}}")]
    InvalidAgentId(String),

    /// The script does not fit in one argument of `execve` (128 KiB).
    #[error("script of {len} bytes exceeds the limit of {max}")]
    ScriptTooLarge { len: usize, max: usize },

    /// A file to read is larger than the caller allows.
    #[error("file {path} exceeds {max} bytes")]
    FileTooLarge { path: String, max: u64 },

    /// A path to read is missing, a directory or a link.
    #[error("{path} is not a regular file")]
    NotAFile { path: String },

    /// A path to write has no file name or no parent directory.
    #[error("invalid target path {0:?}")]
    InvalidPath(String),

    /// Building or reading a tar archive failed.
    #[error("tar: {0}")]
    Tar(#[source] std::io::Error),

    /// A local file (key, known_hosts) could not be read.
    #[error("io on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The target did not answer within the wait.
    #[error("target not healthy after {0:?}")]
    HealthTimeout(Duration),

    /// The operator's revert command failed or could not start.
    #[error("revert command failed: {0}")]
    RevertCommand(String),

    /// A VM's QMP socket failed or refused a command.
    #[error("qmp: {0}")]
    Qmp(String),

    /// A container that should run does not.
    #[error("container {0} is not running")]
    NotRunning(String),

    /// A qemu VM could not be prepared or started.
    #[error("vm: {0}")]
    Vm(String),

    /// The revert command's argv is empty.
    #[error("revert command is empty")]
    NoRevertCommand,

    /// ssh could not reach the target or refused its host key.
    #[error("ssh to the target failed: {0}")]
    SshUnreachable(String),

    /// A helper command on the target (not a worker script) failed.
    #[error("command on the target exited with {exit_code:?}: {output}")]
    Command {
        exit_code: Option<i32>,
        output: String,
    },
}
