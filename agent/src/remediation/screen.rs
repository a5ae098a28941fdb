//! Screens a Worker script before it runs: commands that destroy a host or
//! take the target (or the fleet's view of it) down are refused, whatever
//! the rule. The target is disposable, but a script that wipes it, powers
//! it off or removes the scanner teaches nothing and, on an SSH target,
//! costs a VM. Bans learned by the dream stage join this list later.

use std::sync::OnceLock;

use regex::Regex;

/// Why a script was refused: the denylist entry and the offending line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub line: String,
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
        r"\brm\s+(-\S+\s+)*-\S*[rR]\S*\s+(\S+\s+)*(/|/\*|--no-preserve-root)(\s|;|&|\||$)",
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
    for line in script.lines() {
        let code = line.trim_start();
        if code.starts_with('#') {
            continue;
        }
        if let Some((rule, _)) = compiled().iter().find(|(_, re)| re.is_match(code)) {
            let mut line = code.to_owned();
            crate::workbench::truncate_utf8(&mut line, 200);
            return Err(Refusal { rule, line });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::screen;

    #[test]
    fn host_destroying_commands_are_refused() {
        for bad in [
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
        ] {
            assert!(screen(bad).is_err(), "{bad:?} passed the screen");
        }
    }

    #[test]
    fn ordinary_hardening_passes() {
        let ok = "#!/bin/bash
# reboot is not needed for this change
apt-get install -y -q auditd
rm -rf /tmp/fleet-work /var/cache/apt/archives/*.deb
chmod 0640 /etc/shadow
sed -i 's/^#\\?PermitRootLogin.*/PermitRootLogin no/' /etc/ssh/sshd_config
echo 'kernel.randomize_va_space = 2' > /etc/sysctl.d/99-aslr.conf
systemctl enable auditd || true
dd if=/dev/zero of=/tmp/swapfile bs=1M count=1
apt-get remove -y telnetd nis
";
        assert_eq!(screen(ok), Ok(()));
    }

    #[test]
    fn the_refusal_names_the_rule_and_the_line() {
        let r = screen("echo ok\nrm -rf /\n").unwrap_err();
        assert_eq!(r.rule, "remove_root");
        assert_eq!(r.line, "rm -rf /");
        assert!(r.to_string().contains("remove_root"));
    }
}
