//! Screens a script before it runs or is promoted: commands that destroy a
//! host or take the target (or the fleet's view of it) down are refused,
//! whatever the rule. The target is disposable, but a script that wipes it,
//! powers it off or removes the scanner teaches nothing and, on an SSH
//! target, costs a VM.
//!
//! The agent screens every Worker script with [`screen`] before it runs
//! (and checks the bans on the knowledge repo's `main` line by line with
//! [`code_lines`]); the coordinator's dream stage screens a skill's script
//! before it promotes it. Ban patterns are compiled with [`compile_ban`] on
//! both sides, so a ban the dream stage accepts is one agents can enforce.

use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

/// Longest offending line a [`Refusal`] keeps.
pub const MAX_REFUSAL_LINE_BYTES: usize = 200;
/// Compiled size limit of a ban pattern: a hostile pattern must not cost
/// memory.
pub const MAX_BAN_REGEX_BYTES: usize = 64 * 1024;

/// Why a script was refused: the denylist entry (or `ban:<id>`) and the
/// offending line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: String,
    pub line: String,
}

impl Refusal {
    /// `line` is cut to [`MAX_REFUSAL_LINE_BYTES`].
    pub fn new(rule: impl Into<String>, line: &str) -> Self {
        Refusal {
            rule: rule.into(),
            line: cut_utf8(line, MAX_REFUSAL_LINE_BYTES).to_owned(),
        }
    }
}

/// The lines of `script` that run, comments left out.
pub fn code_lines(script: &str) -> impl Iterator<Item = &str> {
    script
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with('#'))
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused by the script screen ({}): {}",
            self.rule, self.line
        )
    }
}

const DENYLIST: &[(&str, &str)] = &[
    (
        "remove_root",
        r#"\brm\s+(-\S+\s+)*-\S*[rR]\S*\s+(\S+\s+)*(["']?/+(\.|\*)?/*["']?|--no-preserve-root)(\s|;|&|\||$)"#,
    ),
    ("no_preserve_root", r"--no-preserve-root"),
    ("make_filesystem", r"\bmkfs(\.\w+)?\b"),
    (
        "write_block_device",
        r"(\bdd\b[^\n;]*\bof=/dev/(sd|vd|xvd|nvme|hd|mmcblk)|>\s*/dev/(sd|vd|xvd|nvme|hd|mmcblk)[a-z0-9]*)",
    ),
    (
        "power_off",
        r"(^|[;&|(\s])(shutdown|reboot|halt|poweroff)\b|\bsystemctl\s+(reboot|poweroff|halt|kexec|isolate\s+(rescue|emergency))|\binit\s+[06]\b|\btelinit\s+[06]\b",
    ),
    ("fork_bomb", r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:"),
    (
        "kill_everything",
        r"\bkill\s+-(9|KILL|SIGKILL)\s+-1\b|\bkillall5\b",
    ),
    ("chmod_root", r"\bchmod\s+(-\S+\s+)*[0-7]{3,4}\s+/(\s|;|$)"),
    (
        "remove_essentials",
        r"\b(apt-get|apt|dpkg|dnf|yum|rpm)\s+[^\n;]*\b(remove|purge|erase|-r|-P|-e)\b[^\n;]*\b(openscap-scanner|openscap|openssh-server|sudo|bash|coreutils|dpkg|apt|libc6|systemd)\b",
    ),
];

fn compiled() -> &'static [(&'static str, Regex)] {
    static LIST: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    LIST.get_or_init(|| {
        DENYLIST
            .iter()
            .map(|(name, re)| (*name, Regex::new(re).expect("denylist pattern compiles")))
            .collect()
    })
}

/// `Ok` when no line of `script` (comments aside) matches the denylist.
pub fn screen(script: &str) -> Result<(), Refusal> {
    for code in code_lines(script) {
        if let Some((rule, _)) = compiled().iter().find(|(_, re)| re.is_match(code)) {
            return Err(Refusal::new(*rule, code));
        }
    }
    Ok(())
}

/// Compiles a ban pattern the way agents enforce it (size-limited).
pub fn compile_ban(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(MAX_BAN_REGEX_BYTES)
        .build()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
pub fn cut_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Samples for the screen's tests and `make security`: every
/// [`corpus::DESTRUCTIVE`] line must be refused, every [`corpus::BENIGN`]
/// hardening line must pass.
pub mod corpus {
    pub const DESTRUCTIVE: &[&str] = &[
        "rm -rf /",
        "rm -rf / ",
        "sudo rm -fr /*",
        "rm -r -f /",
        "rm -rf --no-preserve-root /",
        "mkfs.ext4 /dev/sda1",
        "dd if=/dev/zero of=/dev/sda bs=1M",
        "cat x > /dev/nvme0n1",
        "shutdown -h now",
        "apt-get install -y cron && reboot",
        "systemctl poweroff",
        "init 0",
        ":(){ :|:& };:",
        "kill -9 -1",
        "chmod -R 777 /",
        "apt-get purge -y openssh-server",
        "apt-get remove -y openscap-scanner",
        "dnf -y remove sudo",
    ];

    pub const BENIGN: &[&str] = &[
        "apt-get install -y -q auditd",
        "rm -rf /tmp/fleet-work /var/cache/apt/archives/*.deb",
        "chmod 0640 /etc/shadow",
        "sed -i 's/^#\\?PermitRootLogin.*/PermitRootLogin no/' /etc/ssh/sshd_config",
        "echo 'kernel.randomize_va_space = 2' > /etc/sysctl.d/99-aslr.conf",
        "systemctl enable auditd || true",
        "dd if=/dev/zero of=/tmp/swapfile bs=1M count=1",
        "apt-get remove -y telnetd nis",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_destroying_commands_are_refused() {
        for bad in corpus::DESTRUCTIVE {
            assert!(screen(bad).is_err(), "{bad:?} passed the screen");
        }
    }

    /// Spellings of "remove everything from the root" the screen catches.
    /// What it cannot see (a command built at run time, `base64 -d | sh`,
    /// `find / -delete`) runs only inside the target container and is
    /// undone by the revert: `targets/tests/sandbox.rs`.
    #[test]
    fn obfuscated_removals_of_root_are_refused() {
        for bad in [
            "rm -rf //",
            "rm -rf /.",
            "rm -rf \"/\"",
            "rm -rf '/'",
            "rm -Rf /",
            "\\rm -rf /",
            "/bin/rm -rf /",
            "command rm -rf /",
            "rm --recursive --force /",
            "rm -rf -- /",
            "rm -v -r -f /*",
            "true && rm -rf / 2>/dev/null",
            "cd /tmp; rm -rf / &",
            "  rm -rf /|cat",
            "rm -rf --no-preserve-root /usr",
            "x=1 rm -rf /",
        ] {
            assert!(screen(bad).is_err(), "{bad:?} passed the screen");
        }
        for ok in [
            "rm -rf /tmp/fleet-work",
            "rm -f /etc/cron.deny",
            "rm -rf /var/cache/apt/archives/*.deb",
            "rm -rf ./build /tmp/x",
        ] {
            assert_eq!(screen(ok), Ok(()), "{ok:?} was refused");
        }
    }

    #[test]
    fn ordinary_hardening_passes() {
        let ok = format!(
            "#!/bin/bash\n# reboot is not needed for this change\n{}\n",
            corpus::BENIGN.join("\n")
        );
        assert_eq!(screen(&ok), Ok(()));
    }

    #[test]
    fn the_refusal_names_the_rule_and_the_line() {
        let r = screen("echo ok\nrm -rf /\n").unwrap_err();
        assert_eq!(r.rule, "remove_root");
        assert_eq!(r.line, "rm -rf /");
        assert!(r.to_string().contains("remove_root"));
    }

    #[test]
    fn a_long_line_is_cut_on_a_char_boundary() {
        let line = format!("rm -rf / {}", "é".repeat(200));
        let r = screen(&line).unwrap_err();
        assert!(r.line.len() <= MAX_REFUSAL_LINE_BYTES);
        assert!(line.starts_with(&r.line));
    }

    #[test]
    fn code_lines_leave_comments_out() {
        let lines: Vec<_> = code_lines(
            "# rm -rf /
  echo ok
   # reboot
",
        )
        .collect();
        assert_eq!(lines, ["echo ok"]);
        assert_eq!(
            screen(
                "  # rm -rf /
"
            ),
            Ok(())
        );
    }

    #[test]
    fn ban_patterns_compile_with_a_size_limit() {
        assert!(compile_ban(r"systemctl\s+stop\s+auditd").is_ok());
        assert!(compile_ban("(").is_err());
        assert!(compile_ban(r"\w{1000}\w{1000}\w{1000}").is_err());
    }
}
