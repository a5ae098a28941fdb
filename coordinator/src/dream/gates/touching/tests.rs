//! Real remediation snippets (mostly SSG's bash fixes) and lessons as the
//! Reflector writes them: each default area escalates on at least one, and
//! look-alikes that only read stay quiet.

use fleet_common::skill_pack::EscalateTouching;
use glob::Pattern;

use super::*;

fn script(text: &str) -> Vec<String> {
    Sensitive::defaults()
        .in_script(text)
        .iter()
        .map(Touch::to_string)
        .collect()
}

fn prose(text: &str) -> Vec<String> {
    Sensitive::defaults()
        .in_prose(text)
        .iter()
        .map(Touch::to_string)
        .collect()
}

#[track_caller]
fn escalates(found: Vec<String>, want: &str) {
    assert!(
        found.iter().any(|t| t == want),
        "wanted {want:?} among {found:?}"
    );
}

#[track_caller]
fn quiet(found: Vec<String>, text: &str) {
    assert!(found.is_empty(), "{text:?} escalated: {found:?}");
}

#[test]
fn pam_writes_and_tools_escalate() {
    escalates(
        script("echo 'auth required pam_faillock.so preauth silent deny=3' >> /etc/pam.d/common-auth\n"),
        "pam: writes /etc/pam.d/common-auth",
    );
    // SSG no_empty_passwords.
    escalates(
        script("sed --follow-symlinks -i 's/\\<nullok\\>//g' /etc/pam.d/system-auth\n"),
        "pam: writes /etc/pam.d/system-auth",
    );
    // SSG accounts_password_pam_unix_remember (Debian): the file is a variable.
    escalates(
        script(
            "pam_file=\"/etc/pam.d/common-password\"\n\
             if ! grep -qE '^\\s*password\\s+.*pam_unix\\.so.*remember=' \"$pam_file\"; then\n\
             \x20   sed -i -E '/^\\s*password\\s+.*pam_unix\\.so/ s/$/ remember=5/' \"$pam_file\"\n\
             fi\n",
        ),
        "pam: writes /etc/pam.d/common-password",
    );
    escalates(
        script("DEBIAN_FRONTEND=noninteractive pam-auth-update --enable faillock\n"),
        "pam: runs pam-auth-update --enable faillock",
    );
    escalates(
        script("authselect enable-feature with-faillock\n"),
        "pam: runs authselect enable-feature with-faillock",
    );
    escalates(
        prose("Append `auth required pam_faillock.so deny=3` to /etc/pam.d/common-auth, above pam_unix.so."),
        "pam: writes /etc/pam.d/common-auth",
    );
    escalates(
        prose(
            "Remove nullok from the pam_unix line with sed -i 's/ nullok//' /etc/pam.d/common-auth",
        ),
        "pam: writes /etc/pam.d/common-auth",
    );
    for benign in [
        "grep -q pam_faillock /etc/pam.d/common-auth",
        "cat /etc/pam.d/common-auth",
        "sed -n '/pam_unix/p' /etc/pam.d/common-password",
        "cp /etc/pam.d/common-auth /root/common-auth.bak",
        "authselect current",
        // Not on the list: login.defs is no PAM file.
        "sed -i 's/^PASS_MAX_DAYS.*/PASS_MAX_DAYS 60/' /etc/login.defs",
        "grep -q '^PASS_MAX_DAYS' /etc/login.defs || echo 'PASS_MAX_DAYS 60' >> /etc/login.defs",
        "echo 'minlen = 14' >> /etc/security/pwquality.conf",
    ] {
        quiet(script(benign), benign);
    }
    for benign in [
        "Check /etc/pam.d/common-auth with `grep pam_faillock /etc/pam.d/common-auth` first.",
        "Set PASS_MAX_DAYS to 60 in /etc/login.defs with sed -i.",
        "The pam_pwquality module reads minlen from /etc/security/pwquality.conf.",
    ] {
        quiet(prose(benign), benign);
    }
}

#[test]
fn sudoers_writes_and_visudo_escalate() {
    // SSG sudo_add_use_pty, in one line.
    escalates(
        script("if ! grep -q '^Defaults.*use_pty' /etc/sudoers; then echo 'Defaults use_pty' >> /etc/sudoers; fi\n"),
        "sudoers: writes /etc/sudoers",
    );
    escalates(
        script("cat > /etc/sudoers.d/90-fleet <<'EOF'\nDefaults logfile=/var/log/sudo.log\nEOF\nchmod 0440 /etc/sudoers.d/90-fleet\n"),
        "sudoers: writes /etc/sudoers.d/90-fleet",
    );
    escalates(
        script("find /etc/sudoers.d -type f -exec chmod 0440 {} \\;\n"),
        "sudoers: writes /etc/sudoers.d",
    );
    escalates(
        script("visudo -f /etc/sudoers.d/hardening\n"),
        "sudoers: runs visudo -f /etc/sudoers.d/hardening",
    );
    escalates(
        prose("Add `Defaults use_pty` to /etc/sudoers through visudo, never by hand."),
        "sudoers: writes /etc/sudoers",
    );
    for benign in [
        "[ -f /etc/sudoers ]",
        "test -d /etc/sudoers.d && ls /etc/sudoers.d",
        "grep -r NOPASSWD /etc/sudoers /etc/sudoers.d",
        "visudo -c",
        "visudo -c -f /etc/sudoers",
    ] {
        quiet(script(benign), benign);
    }
    quiet(
        prose("Validate with `visudo -c` after the check reports use_pty missing."),
        "visudo -c",
    );
}

#[test]
fn account_database_writes_and_tools_escalate() {
    escalates(
        script("usermod -L games\n"),
        "accounts: runs usermod -L games",
    );
    escalates(
        script("chage -M 60 root\n"),
        "accounts: runs chage -M 60 root",
    );
    // SSG no_empty_passwords_etc_shadow style: a read piped into a write.
    escalates(
        script("awk -F: '($2 == \"\") {print $1}' /etc/shadow | xargs -r -n1 passwd -l\n"),
        "accounts: runs passwd -l",
    );
    escalates(
        script("echo 'root:S3cret' | chpasswd\n"),
        "accounts: runs chpasswd",
    );
    escalates(
        script("sed -i 's/^games:/#games:/' /etc/passwd\n"),
        "accounts: writes /etc/passwd",
    );
    // Metadata is a write too (SSG file_permissions_etc_shadow).
    escalates(
        script("chmod 0640 /etc/shadow\n"),
        "accounts: writes /etc/shadow",
    );
    escalates(
        script("for f in /etc/passwd /etc/group; do\n  chown root:root \"$f\"\ndone\n"),
        "accounts: writes /etc/group",
    );
    escalates(
        prose("Lock it with `passwd -l games` rather than deleting the account."),
        "accounts: runs passwd -l games",
    );
    for benign in [
        "grep x /etc/passwd",
        "cat /etc/shadow",
        "awk -F: '$3 == 0 {print $1}' /etc/passwd",
        "cut -d: -f1 /etc/passwd | sort",
        "getent passwd root",
        "stat -c '%a %U %G' /etc/shadow",
        "passwd -S root",
        "chage -l root",
        "while IFS=: read -r user _; do echo \"$user\"; done < /etc/passwd",
        // Defaults for new accounts, not an account.
        "useradd -D -f 35",
        // An audit watch names the file; it does not write it.
        "echo '-w /etc/passwd -p wa -k identity' >> /etc/audit/rules.d/identity.rules",
    ] {
        quiet(script(benign), benign);
    }
    for benign in [
        "Verify that /etc/passwd has no uid 0 account but root with `awk -F: '$3 == 0' /etc/passwd`.",
        "Add `-w /etc/passwd -p wa -k identity` to /etc/audit/rules.d/identity.rules and run augenrules --load.",
        "The passwd file is world readable; only the shadow file holds hashes.",
    ] {
        quiet(prose(benign), benign);
    }
}

#[test]
fn authorized_keys_escalate() {
    escalates(
        script("mkdir -p /root/.ssh && echo \"$KEY\" >> /root/.ssh/authorized_keys\n"),
        "ssh_keys: writes /root/.ssh/authorized_keys",
    );
    escalates(
        script("rm -f /home/*/.ssh/authorized_keys\n"),
        "ssh_keys: writes /home/*/.ssh/authorized_keys",
    );
    escalates(
        prose("Remove stale keys from ~/.ssh/authorized_keys of root."),
        "ssh_keys: writes ~/.ssh/authorized_keys",
    );
    for benign in [
        "ls -l /root/.ssh/authorized_keys",
        "grep -c ssh-ed25519 /root/.ssh/authorized_keys",
        "sed -i 's/^#\\?PermitRootLogin.*/PermitRootLogin no/' /etc/ssh/sshd_config",
    ] {
        quiet(script(benign), benign);
    }
}

#[test]
fn boot_loader_writes_and_tools_escalate() {
    // SSG grub2_audit_argument (Debian).
    let grub = "if grep -q '^GRUB_CMDLINE_LINUX=.*audit=.*\"' '/etc/default/grub' ; then\n\
                \x20 sed -i \"s/\\(^GRUB_CMDLINE_LINUX=\\\".*\\)audit=[^[:space:]]*\\(.*\\\"\\)/\\1 audit=1 \\2/\" '/etc/default/grub'\n\
                else\n\
                \x20 sed -i \"s/\\(^GRUB_CMDLINE_LINUX=\\\".*\\)\\\"/\\1 audit=1\\\"/\" '/etc/default/grub'\n\
                fi\n\
                update-grub\n";
    let found = script(grub);
    escalates(found.clone(), "boot_loader: writes /etc/default/grub");
    escalates(found, "boot_loader: runs update-grub");
    escalates(
        script("grubby --update-kernel=ALL --args=audit_backlog_limit=8192\n"),
        "boot_loader: runs grubby --update-kernel=ALL --args=audit_backlog_limit=8192",
    );
    escalates(
        script("chmod 0600 /boot/grub/grub.cfg\n"),
        "boot_loader: writes /boot/grub/grub.cfg",
    );
    escalates(
        prose("After editing /etc/default/grub run grub-mkconfig -o /boot/grub/grub.cfg."),
        "boot_loader: runs grub-mkconfig -o /boot/grub/grub.cfg",
    );
    for benign in [
        "grep -q audit=1 /proc/cmdline",
        "grep GRUB_CMDLINE_LINUX /etc/default/grub",
        "stat -c %a /boot/grub/grub.cfg",
        "grubby --info=ALL",
    ] {
        quiet(script(benign), benign);
    }
}

#[test]
fn mac_mode_changes_escalate() {
    escalates(script("setenforce 1\n"), "mac: runs setenforce 1");
    escalates(
        script("sed -i 's/^SELINUX=.*/SELINUX=enforcing/' /etc/selinux/config\n"),
        "mac: writes /etc/selinux/config",
    );
    escalates(
        script("aa-enforce /etc/apparmor.d/*\n"),
        "mac: runs aa-enforce /etc/apparmor.d/*",
    );
    escalates(
        script("aa-complain /etc/apparmor.d/usr.sbin.cupsd\n"),
        "mac: runs aa-complain /etc/apparmor.d/usr.sbin.cupsd",
    );
    escalates(
        script("systemctl disable --now apparmor\n"),
        "mac: changes service apparmor: systemctl disable --now apparmor",
    );
    let found = script(
        "echo 'GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX apparmor=1 security=apparmor\"' > /etc/default/grub.d/apparmor.cfg\n",
    );
    escalates(found.clone(), "mac: sets kernel argument apparmor=1");
    escalates(
        found,
        "boot_loader: writes /etc/default/grub.d/apparmor.cfg",
    );
    escalates(
        prose("If the rule fails, run `setenforce 1` and make it persistent."),
        "mac: runs setenforce 1",
    );
    for benign in [
        "getenforce",
        "sestatus",
        "aa-status --enabled",
        "grep ^SELINUX= /etc/selinux/config",
        "grep -q apparmor=1 /proc/cmdline",
        "systemctl is-active apparmor",
    ] {
        quiet(script(benign), benign);
    }
}

#[test]
fn firewall_default_policies_escalate() {
    for (line, want) in [
        (
            "iptables -P INPUT DROP",
            "firewall: runs iptables -P INPUT DROP",
        ),
        (
            "ip6tables -P FORWARD DROP",
            "firewall: runs ip6tables -P FORWARD DROP",
        ),
        (
            "ufw default deny incoming",
            "firewall: runs ufw default deny incoming",
        ),
        (
            "nft add chain inet filter input '{ policy drop ; }'",
            "firewall: runs nft add chain inet filter input { policy drop ; }",
        ),
        (
            "firewall-cmd --set-default-zone=drop",
            "firewall: runs firewall-cmd --set-default-zone=drop",
        ),
        (
            "sed -i 's/^DEFAULT_INPUT_POLICY=.*/DEFAULT_INPUT_POLICY=\"DROP\"/' /etc/default/ufw",
            "firewall: writes /etc/default/ufw",
        ),
        (
            "systemctl enable --now ufw",
            "firewall: changes service ufw: systemctl enable --now ufw",
        ),
    ] {
        escalates(script(line), want);
    }
    for benign in [
        "iptables -L -n",
        "ufw status verbose",
        "nft list ruleset",
        "firewall-cmd --get-default-zone",
        "iptables -A INPUT -i lo -j ACCEPT",
        "systemctl is-enabled ufw",
    ] {
        quiet(script(benign), benign);
    }
}

#[test]
fn fstab_and_mount_options_escalate() {
    escalates(
        script("mount -o remount,nodev /tmp\n"),
        "mounts: runs mount -o remount,nodev /tmp",
    );
    escalates(
        script("sed -i 's|\\(\\s/tmp\\s.*defaults\\)|\\1,nodev|' /etc/fstab\n"),
        "mounts: writes /etc/fstab",
    );
    escalates(
        script("echo 'tmpfs /dev/shm tmpfs defaults,nodev,nosuid,noexec 0 0' >> /etc/fstab\n"),
        "mounts: writes /etc/fstab",
    );
    escalates(
        prose("Add nodev to the /tmp line in /etc/fstab, then remount."),
        "mounts: writes /etc/fstab",
    );
    for benign in [
        "mount | grep /tmp",
        "findmnt -n /tmp",
        "grep -E '\\s/tmp\\s' /etc/fstab",
        "stat /etc/fstab",
        "mount -l -t tmpfs",
    ] {
        quiet(script(benign), benign);
    }
    quiet(
        prose("The mount options of /tmp are listed by `findmnt -n /tmp`; `mount | grep /tmp` shows the same."),
        "mount read",
    );
}

#[test]
fn module_blacklists_escalate() {
    escalates(
        script("echo \"install usb-storage /bin/true\" > /etc/modprobe.d/usb-storage.conf\n"),
        "module_blacklist: writes /etc/modprobe.d/usb-storage.conf",
    );
    escalates(
        script("printf '%s\\n' 'blacklist cramfs' >> /etc/modprobe.d/cramfs.conf\n"),
        "module_blacklist: writes /etc/modprobe.d/cramfs.conf",
    );
    escalates(
        prose("Disable USB storage:\n```sh\necho 'install usb-storage /bin/true' > /etc/modprobe.d/usb-storage.conf\n```\n"),
        "module_blacklist: writes /etc/modprobe.d/usb-storage.conf",
    );
    for benign in [
        "modprobe -n -v usb-storage",
        "grep -r usb-storage /etc/modprobe.d/",
        "lsmod | grep cramfs",
    ] {
        quiet(script(benign), benign);
    }
}

#[test]
fn chattr_escalates_and_lsattr_does_not() {
    escalates(
        script("chattr +i /etc/resolv.conf\n"),
        "attributes: runs chattr +i /etc/resolv.conf",
    );
    quiet(script("lsattr /etc/passwd\n"), "lsattr");
}

#[test]
fn here_document_bodies_are_data_not_commands() {
    let text =
        "cat > /tmp/notes <<EOF\nmount -o remount,nodev /tmp\nsetenforce 0\nEOF\necho done\n";
    quiet(script(text), text);
}

#[test]
fn a_pack_adds_paths_commands_and_services() {
    let extra = EscalateTouching {
        paths: vec![Pattern::new("/etc/security/pwquality.conf").unwrap()],
        commands: vec!["authconfig-tui".into()],
        services: vec!["sssd".into()],
    };
    let s = Sensitive::with_pack(&extra);
    let found: Vec<String> = s
        .in_script(
            "echo 'minlen = 14' >> /etc/security/pwquality.conf\nauthconfig-tui\nsystemctl restart sssd\n",
        )
        .iter()
        .map(Touch::to_string)
        .collect();
    assert_eq!(
        found,
        [
            "pack: writes /etc/security/pwquality.conf",
            "pack: runs authconfig-tui",
            "pack: changes service sssd: systemctl restart sssd",
        ]
    );
    // The defaults stay.
    escalates(
        s.in_script("setenforce 0\n")
            .iter()
            .map(Touch::to_string)
            .collect(),
        "mac: runs setenforce 0",
    );
}
