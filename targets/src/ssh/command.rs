//! The argv run in the sandbox and the commands run by the remote shell.
//! The remote side gets strings for its login shell, so everything that
//! comes from outside is single-quoted.

use super::config::SshTargetConfig;
use crate::docker::KILL_SCRIPT;

/// Where the sandbox keeps the private key (mode 600).
pub(crate) const KEY_PATH: &str = "/etc/fleet-ssh-key";
/// Where the sandbox keeps the target's host key.
pub(crate) const KNOWN_HOSTS_PATH: &str = "/etc/fleet-ssh-known-hosts";

/// Sandbox argv: `stdin` piped into `ssh … remote`. With `merge`, ssh's
/// stderr (and so the remote stderr) joins stdout.
pub(crate) fn sandbox_argv(
    config: &SshTargetConfig,
    remote: &str,
    stdin: &str,
    merge: bool,
) -> Vec<String> {
    let wrapper = if merge {
        r#"exec 2>&1; printf '%s' "$1" | "${@:2}""#
    } else {
        r#"printf '%s' "$1" | "${@:2}""#
    };
    let mut argv = vec![
        "bash".to_string(),
        "-c".to_string(),
        wrapper.to_string(),
        "fleet-ssh".to_string(),
        stdin.to_string(),
    ];
    argv.extend(ssh_argv(config, remote));
    argv
}

fn ssh_argv(config: &SshTargetConfig, remote: &str) -> Vec<String> {
    let options = [
        "BatchMode=yes".to_string(),
        "IdentitiesOnly=yes".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        format!("UserKnownHostsFile={KNOWN_HOSTS_PATH}"),
        "GlobalKnownHostsFile=/dev/null".to_string(),
        format!("ConnectTimeout={}", config.connect_timeout_secs),
        "ServerAliveInterval=15".to_string(),
        "ServerAliveCountMax=4".to_string(),
        "RequestTTY=no".to_string(),
        "LogLevel=ERROR".to_string(),
    ];
    let alias = config
        .host_key_alias
        .as_ref()
        .map(|alias| format!("HostKeyAlias={alias}"));
    let mut argv = vec!["ssh".to_string(), "-i".to_string(), KEY_PATH.to_string()];
    for option in options.into_iter().chain(alias) {
        argv.push("-o".to_string());
        argv.push(option);
    }
    argv.extend([
        "-p".to_string(),
        config.port.to_string(),
        "-l".to_string(),
        config.user.clone(),
        "--".to_string(),
        config.host.clone(),
        remote.to_string(),
    ]);
    argv
}

/// The line printed once the script is in place and about to run: before
/// it, only ssh speaks; without it, the script never ran.
pub(crate) fn sentinel(marker: &str) -> String {
    format!("FLEET-SCRIPT-STARTS-{marker}\n")
}

/// Remote command: stores stdin as the script, then runs it with empty
/// stdin and every process marked with `marker` for the kill script.
pub(crate) fn run_script(marker: &str) -> String {
    let sentinel = shell_quote(&sentinel(marker));
    let marker = shell_quote(marker);
    format!(
        "f=$(mktemp) && cat > \"$f\" && {{ printf %s {sentinel}; \
         FLEET_EXEC_ID={marker} bash \"$f\" </dev/null 2>&1; rc=$?; rm -f \"$f\"; exit $rc; }}"
    )
}

/// Remote command killing the processes of `marker`; the kill script comes
/// on stdin.
pub(crate) fn kill_script(marker: &str) -> (String, &'static str) {
    (format!("bash -s -- {}", shell_quote(marker)), KILL_SCRIPT)
}

/// Exit code of [`read_file`] when the path is not a regular file.
pub(crate) const NOT_A_FILE: i32 = 3;

/// Remote command printing at most `max_bytes + 1` bytes of `path`, so a
/// larger file shows.
pub(crate) fn read_file(path: &str, max_bytes: u64) -> String {
    let path = shell_quote(path);
    format!(
        "f={path}; if [ ! -f \"$f\" ]; then echo 'not a regular file' >&2; exit {NOT_A_FILE}; fi; \
         head -c {} -- \"$f\"",
        max_bytes + 1
    )
}

/// `s` as one word for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn ssh_checks_the_host_key_and_never_prompts() {
        let config = SshTargetConfig::new("h", "/k", "/kh", vec!["true".into()], "n", "a", 0);
        let argv = sandbox_argv(&config, "true", "", true);
        let joined = argv.join(" ");
        assert!(joined.contains("StrictHostKeyChecking=yes"));
        assert!(joined.contains("BatchMode=yes"));
        assert!(joined.ends_with("-- h true"));
        assert!(!joined.contains("HostKeyAlias"));
        let config = SshTargetConfig {
            host_key_alias: Some("fleet-vm".into()),
            ..config
        };
        let joined = sandbox_argv(&config, "true", "", true).join(" ");
        assert!(joined.contains("-o HostKeyAlias=fleet-vm"), "{joined}");
    }
}
