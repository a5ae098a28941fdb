//! Content-based hard escalation (DESIGN D7, amended): what a candidate
//! touches — PAM, sudoers, the account databases, SSH authorized keys, the
//! boot loader, SELinux/AppArmor modes, firewall default policies, mounts,
//! module blacklists, immutable attributes — sends it to a human whatever
//! its rule id. The defaults are here; a pack adds paths, commands and
//! services (`[escalate_touching]` in `pack.toml`).
//!
//! Reading is not writing: only paths a command writes count
//! ([`shell`](super::shell)), and commands count only in the forms that
//! change something (`visudo -c`, `passwd -S`, `chage -l`, `mount` without
//! arguments are reads). A skill is a script. A lesson or a ban's
//! explanation is prose with commands in it: its code blocks, its code
//! spans and the commands inline in its sentences are judged as shell, and
//! a sentence that tells the worker to write a listed path (a write verb,
//! and the path its object: "append … to /etc/pam.d/common-auth") counts
//! too. Conservative on purpose: a false escalation costs an operator a
//! look, a missed one can lock every host out.

use std::path::Path;

use fleet_common::skill_pack::EscalateTouching;
use glob::Pattern;

use super::shell::{self, Command, Effects};
use super::text::sentences;

/// One thing a candidate touches, named for the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The area: `pam`, `sudoers`, `accounts`, `ssh_keys`, `boot_loader`,
    /// `mac`, `firewall`, `mounts`, `module_blacklist`, `attributes`, or
    /// `pack` for the pack's additions.
    pub area: String,
    /// `writes /etc/pam.d/common-auth`, `runs visudo`, …
    pub what: String,
}

impl std::fmt::Display for Touch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.area, self.what)
    }
}

/// Whether an invocation of a listed command changes anything.
type Changes = fn(&Command) -> bool;

struct CommandRule {
    name: String,
    changes: Changes,
}

struct Area {
    name: String,
    /// Globs; a path matches if it or one of its parents does.
    paths: Vec<Pattern>,
    commands: Vec<CommandRule>,
    /// Services whose state an init command changes.
    services: Vec<String>,
    /// Fragments of words that, in a command that writes, change the area
    /// (kernel arguments such as `apparmor=0`).
    written_fragments: Vec<&'static str>,
}

/// What escalates: the defaults plus a pack's additions.
pub struct Sensitive {
    areas: Vec<Area>,
}

fn always(_: &Command) -> bool {
    true
}
fn with_operands(c: &Command) -> bool {
    !c.args.is_empty()
}
fn unless(c: &Command, reads: &[&str]) -> bool {
    !c.has_option(reads)
}
fn visudo(c: &Command) -> bool {
    unless(c, &["-c", "--check"])
}
fn passwd(c: &Command) -> bool {
    unless(c, &["-S", "--status", "-a", "--all"])
}
fn chage(c: &Command) -> bool {
    unless(c, &["-l", "--list"])
}
fn useradd(c: &Command) -> bool {
    // `useradd -D …` changes the defaults for new accounts, not accounts.
    unless(c, &["-D", "--defaults"])
}
fn authselect(c: &Command) -> bool {
    let verb = c.operands().first().copied().unwrap_or("");
    !matches!(
        verb,
        "" | "current" | "check" | "list" | "list-features" | "show" | "test"
    )
}
fn authconfig(c: &Command) -> bool {
    c.has_option(&["--update", "--updateall"])
}
fn grubby(c: &Command) -> bool {
    c.has_option(&[
        "--update-kernel",
        "--args",
        "--remove-args",
        "--set-default",
        "--set-default-index",
        "--add-kernel",
        "--remove-kernel",
        "--copy-default",
    ])
}
fn grub_editenv(c: &Command) -> bool {
    c.operands()
        .iter()
        .any(|w| matches!(*w, "set" | "unset" | "create"))
}
fn apparmor_parser(c: &Command) -> bool {
    c.has_option(&["-R", "--remove"])
}
fn iptables(c: &Command) -> bool {
    c.has_option(&["-P", "--policy"])
}
fn ufw(c: &Command) -> bool {
    let verb = c.operands().first().copied().unwrap_or("");
    matches!(verb, "default" | "enable" | "disable" | "reset")
}
fn nft(c: &Command) -> bool {
    c.args
        .iter()
        .any(|w| w.split([' ', ';', '{', '}']).any(|t| t == "policy"))
}
fn firewall_cmd(c: &Command) -> bool {
    c.has_option(&["--set-default-zone", "--set-target", "--panic-on"])
}
fn mount(c: &Command) -> bool {
    // Bare `mount` (or `mount -l`, `-t TYPE`) lists; anything else mounts.
    c.has_option(&[
        "-o",
        "--options",
        "-a",
        "--all",
        "-B",
        "--bind",
        "-M",
        "--move",
    ]) || !shell_operands(c, &["-t", "--types"]).is_empty()
}
fn shell_operands<'a>(c: &'a Command, takes: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = c.args.iter();
    while let Some(a) = it.next() {
        if takes.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            out.push(a.as_str());
        }
    }
    out
}

fn area(
    name: &str,
    paths: &[&str],
    commands: &[(&str, Changes)],
    services: &[&str],
    written_fragments: &[&'static str],
) -> Area {
    Area {
        name: name.to_owned(),
        paths: paths
            .iter()
            .map(|p| Pattern::new(p).expect("default escalation globs are valid"))
            .collect(),
        commands: commands
            .iter()
            .map(|(name, changes)| CommandRule {
                name: (*name).to_owned(),
                changes: *changes,
            })
            .collect(),
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        written_fragments: written_fragments.to_vec(),
    }
}

impl Sensitive {
    /// The defaults (DESIGN D7, amended).
    pub fn defaults() -> Self {
        let areas = vec![
            area(
                "pam",
                &[
                    "/etc/pam.d",
                    "/etc/pam.conf",
                    "/usr/share/pam-configs",
                    "/etc/security/faillock.conf",
                    "/etc/security/access.conf",
                    "/etc/authselect",
                    "/lib/security",
                    "/lib/*/security",
                    "/usr/lib/security",
                    "/usr/lib/*/security",
                    "/usr/lib64/security",
                ],
                &[
                    ("pam-auth-update", always),
                    ("authselect", authselect),
                    ("authconfig", authconfig),
                ],
                &[],
                &[],
            ),
            area(
                "sudoers",
                &["/etc/sudoers", "/etc/sudoers.d", "/etc/sudo.conf"],
                &[("visudo", visudo)],
                &[],
                &[],
            ),
            area(
                "accounts",
                &[
                    "/etc/shadow",
                    "/etc/shadow-",
                    "/etc/passwd",
                    "/etc/passwd-",
                    "/etc/group",
                    "/etc/group-",
                    "/etc/gshadow",
                    "/etc/gshadow-",
                ],
                &[
                    ("chpasswd", always),
                    ("chgpasswd", always),
                    ("newusers", always),
                    ("vipw", always),
                    ("vigr", always),
                    ("pwconv", always),
                    ("pwunconv", always),
                    ("grpconv", always),
                    ("grpunconv", always),
                    ("usermod", with_operands),
                    ("userdel", with_operands),
                    ("groupadd", with_operands),
                    ("groupmod", with_operands),
                    ("groupdel", with_operands),
                    ("gpasswd", with_operands),
                    ("useradd", useradd),
                    ("adduser", with_operands),
                    ("deluser", with_operands),
                    ("passwd", passwd),
                    ("chage", chage),
                ],
                &[],
                &[],
            ),
            area(
                "ssh_keys",
                &["*authorized_keys*"],
                &[("ssh-copy-id", always)],
                &[],
                &[],
            ),
            area(
                "boot_loader",
                &[
                    "/etc/default/grub",
                    "/etc/default/grub.d",
                    "/etc/grub.d",
                    "/etc/grub2.cfg",
                    "/etc/grub2-efi.cfg",
                    "/boot/grub*",
                    "/boot/efi",
                    "/boot/loader",
                    "/etc/kernel/cmdline",
                ],
                &[
                    ("grub-mkconfig", always),
                    ("grub2-mkconfig", always),
                    ("update-grub", always),
                    ("update-grub2", always),
                    ("grub-install", always),
                    ("grub2-install", always),
                    ("grub2-setpassword", always),
                    ("grub-editenv", grub_editenv),
                    ("grub2-editenv", grub_editenv),
                    ("grubby", grubby),
                ],
                &[],
                &[],
            ),
            area(
                "mac",
                &[
                    "/etc/selinux/config",
                    "/etc/sysconfig/selinux",
                    "/etc/apparmor.d/disable",
                    "/etc/apparmor.d/force-complain",
                ],
                &[
                    ("setenforce", with_operands),
                    ("selinux-activate", always),
                    ("aa-enforce", always),
                    ("aa-complain", always),
                    ("aa-disable", always),
                    ("aa-audit", always),
                    ("apparmor_parser", apparmor_parser),
                ],
                &["apparmor", "selinux-autorelabel"],
                &["apparmor=", "selinux=", "enforcing=", "security="],
            ),
            area(
                "firewall",
                &[
                    "/etc/default/ufw",
                    "/etc/ufw/ufw.conf",
                    "/etc/firewalld/firewalld.conf",
                    "/etc/nftables.conf",
                    "/etc/sysconfig/nftables.conf",
                    "/etc/sysconfig/iptables",
                    "/etc/sysconfig/ip6tables",
                    "/etc/iptables",
                ],
                &[
                    ("iptables", iptables),
                    ("ip6tables", iptables),
                    ("iptables-legacy", iptables),
                    ("ip6tables-legacy", iptables),
                    ("iptables-nft", iptables),
                    ("ip6tables-nft", iptables),
                    ("ufw", ufw),
                    ("nft", nft),
                    ("firewall-cmd", firewall_cmd),
                    ("firewall-offline-cmd", firewall_cmd),
                ],
                &[
                    "firewalld",
                    "ufw",
                    "nftables",
                    "iptables",
                    "ip6tables",
                    "netfilter-persistent",
                ],
                &[],
            ),
            area(
                "mounts",
                &[
                    "/etc/fstab",
                    "/etc/systemd/system/*.mount",
                    "/etc/systemd/system/*.mount.d",
                    "/etc/systemd/system/*.automount",
                ],
                &[("mount", mount), ("umount", with_operands)],
                &[],
                &[],
            ),
            area(
                "module_blacklist",
                &["/etc/modprobe.d", "/lib/modprobe.d", "/usr/lib/modprobe.d"],
                &[],
                &[],
                &[],
            ),
            area("attributes", &[], &[("chattr", with_operands)], &[], &[]),
        ];
        Sensitive { areas }
    }

    /// The defaults plus a pack's additions (area `pack`).
    pub fn with_pack(extra: &EscalateTouching) -> Self {
        let mut s = Self::defaults();
        s.areas.push(Area {
            name: "pack".to_owned(),
            paths: extra.paths.clone(),
            commands: extra
                .commands
                .iter()
                .map(|name| CommandRule {
                    name: name.clone(),
                    changes: always,
                })
                .collect(),
            services: extra.services.clone(),
            written_fragments: Vec::new(),
        });
        s
    }

    /// What a skill's script touches, in order, each once.
    pub fn in_script(&self, script: &str) -> Vec<Touch> {
        let mut out = Vec::new();
        self.effects_into(&shell::script(script), &mut out);
        out
    }

    /// What a lesson's (or a ban's) text touches: its code, the commands
    /// in its sentences, and the listed paths its sentences tell to write.
    pub fn in_prose(&self, text: &str) -> Vec<Touch> {
        let mut out = Vec::new();
        let mut prose = Vec::new();
        let mut fence: Option<Vec<&str>> = None;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                match fence.take() {
                    Some(code) => self.effects_into(&shell::script(&code.join("\n")), &mut out),
                    None => fence = Some(Vec::new()),
                }
                continue;
            }
            match &mut fence {
                Some(code) => code.push(line),
                None => prose.push(line),
            }
        }
        if let Some(code) = fence {
            self.effects_into(&shell::script(&code.join("\n")), &mut out);
        }
        for line in prose {
            for span in code_spans(line) {
                self.effects_into(&shell::line(span), &mut out);
            }
            for command in inline_commands(line) {
                self.effects_into(&shell::line(command), &mut out);
            }
            for sentence in sentences(line) {
                for path in written_in_prose(sentence) {
                    self.path_into(&path, &mut out);
                }
            }
        }
        out
    }

    fn effects_into(&self, e: &Effects, out: &mut Vec<Touch>) {
        for path in &e.writes {
            self.path_into(path, out);
        }
        for c in &e.commands {
            for a in &self.areas {
                if a.commands
                    .iter()
                    .any(|r| r.name == c.name && (r.changes)(c))
                {
                    push(out, &a.name, format!("runs {}", c.display()));
                }
                if let Some(unit) = service_changed(c, &a.services) {
                    push(
                        out,
                        &a.name,
                        format!("changes service {unit}: {}", c.display()),
                    );
                }
            }
        }
        for w in &e.written_words {
            for a in &self.areas {
                if let Some(f) = a.written_fragments.iter().find(|f| w.contains(**f)) {
                    let at = w.find(f).unwrap_or(0);
                    let arg: String = w[at..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
                        .collect();
                    push(out, &a.name, format!("sets kernel argument {arg}"));
                }
            }
        }
    }

    fn path_into(&self, path: &str, out: &mut Vec<Touch>) {
        let path = normalize(path);
        for a in &self.areas {
            if a.paths.iter().any(|p| matches_path(p, &path)) {
                push(out, &a.name, format!("writes {path}"));
            }
        }
    }
}

fn push(out: &mut Vec<Touch>, area: &str, what: String) {
    let t = Touch {
        area: area.to_owned(),
        what,
    };
    if !out.contains(&t) {
        out.push(t);
    }
}

/// The path or one of its parents matches.
fn matches_path(p: &Pattern, path: &str) -> bool {
    Path::new(path)
        .ancestors()
        .filter_map(Path::to_str)
        .filter(|a| !a.is_empty())
        .any(|a| p.matches(a))
}

/// `//` collapsed, `/./` dropped, a trailing `/` or sentence punctuation
/// dropped.
fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches(['.', ',', ';', ':', ')', '/', '!', '?']);
    let absolute = trimmed.starts_with('/');
    let parts: Vec<&str> = trimmed
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Init-system verbs that change a service's state.
const SERVICE_CHANGES: &[&str] = &[
    "start",
    "stop",
    "restart",
    "reload",
    "try-restart",
    "reload-or-restart",
    "force-reload",
    "enable",
    "disable",
    "mask",
    "unmask",
    "kill",
    "reenable",
    "off",
    "on",
    "remove",
    "defaults",
    "add",
    "del",
    "delete",
];

/// The listed unit whose state `c` changes, if any: `systemctl VERB UNIT…`,
/// `service UNIT VERB`, `update-rc.d UNIT VERB`, `chkconfig UNIT on|off`,
/// `rc-update add|del UNIT`.
fn service_changed(c: &Command, services: &[String]) -> Option<String> {
    if services.is_empty() {
        return None;
    }
    let ops = c.operands();
    let (verb, units): (&str, Vec<&str>) = match c.name.as_str() {
        "systemctl" => (ops.first().copied()?, ops.get(1..)?.to_vec()),
        "service" | "update-rc.d" | "chkconfig" => (ops.get(1).copied()?, vec![ops[0]]),
        "rc-update" => (ops.first().copied()?, ops.get(1..2)?.to_vec()),
        _ => return None,
    };
    if !SERVICE_CHANGES.contains(&verb) {
        return None;
    }
    units.into_iter().find_map(|u| {
        let name = u
            .strip_suffix(".service")
            .or_else(|| u.strip_suffix(".socket"))
            .unwrap_or(u);
        services.iter().any(|s| s == name).then(|| name.to_owned())
    })
}

/// Text between backticks on one line.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`')
        .enumerate()
        .filter(|(i, s)| i % 2 == 1 && !s.trim().is_empty())
        .map(|(_, s)| s)
        .collect()
}

/// Commands a sentence names that are unlikely to be ordinary words.
const COMMAND_WORDS: &[&str] = &[
    "pam-auth-update",
    "authselect",
    "authconfig",
    "visudo",
    "chpasswd",
    "chgpasswd",
    "newusers",
    "vipw",
    "vigr",
    "pwconv",
    "grpconv",
    "usermod",
    "userdel",
    "useradd",
    "groupadd",
    "groupmod",
    "groupdel",
    "gpasswd",
    "chage",
    "ssh-copy-id",
    "grub-mkconfig",
    "grub2-mkconfig",
    "update-grub",
    "update-grub2",
    "grub-install",
    "grub2-install",
    "grub2-setpassword",
    "grub-editenv",
    "grub2-editenv",
    "grubby",
    "setenforce",
    "selinux-activate",
    "aa-enforce",
    "aa-complain",
    "aa-disable",
    "aa-audit",
    "apparmor_parser",
    "iptables",
    "ip6tables",
    "firewall-cmd",
    "firewall-offline-cmd",
    "chattr",
    "systemctl",
    "update-rc.d",
    "chkconfig",
    "sed",
    "tee",
    "truncate",
    "chmod",
    "chown",
    "chgrp",
    "crudini",
    "sudoedit",
];
/// Commands that are also English words: they count in a sentence only
/// when an option, a path or a quoted argument follows.
const AMBIGUOUS_COMMANDS: &[&str] = &[
    "passwd", "mount", "umount", "ufw", "nft", "echo", "printf", "cat", "cp", "mv", "rm", "ln",
    "install", "touch", "perl", "awk", "dd", "service", "find", "mkdir", "vi", "vim", "nano",
    "adduser", "deluser",
];

/// From each command word in a sentence to the end of that sentence: the
/// inline commands of prose ("run sed -i 's/nullok//' /etc/pam.d/…").
fn inline_commands(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for sentence in sentences(line) {
        let mut offset = 0;
        for word in sentence.split_whitespace() {
            let at = offset + sentence[offset..].find(word).unwrap_or(0);
            offset = at + word.len();
            let bare = word.trim_matches(|c: char| "`\"'(,".contains(c));
            let rest = sentence[offset..].trim_start();
            let next_is_argument = rest.starts_with(['-', '/', '\'', '"', '~', '$', '>', '+']);
            if COMMAND_WORDS.contains(&bare)
                || (AMBIGUOUS_COMMANDS.contains(&bare) && next_is_argument)
            {
                let from = at + word.find(bare).unwrap_or(0);
                out.push(sentence[from..].trim_end_matches(['.', ',']));
                break;
            }
        }
    }
    out
}

/// Verbs that tell the worker to change a file.
const WRITE_VERBS: &[&str] = &[
    "add",
    "adds",
    "added",
    "adding",
    "append",
    "appends",
    "appended",
    "appending",
    "insert",
    "inserts",
    "inserted",
    "inserting",
    "prepend",
    "put",
    "write",
    "writes",
    "written",
    "writing",
    "overwrite",
    "edit",
    "edits",
    "edited",
    "editing",
    "modify",
    "modifies",
    "modified",
    "modifying",
    "change",
    "changes",
    "changed",
    "changing",
    "set",
    "sets",
    "setting",
    "update",
    "updates",
    "updated",
    "updating",
    "replace",
    "replaces",
    "replaced",
    "replacing",
    "remove",
    "removes",
    "removed",
    "removing",
    "delete",
    "deletes",
    "deleted",
    "deleting",
    "comment",
    "uncomment",
    "create",
    "creates",
    "created",
    "creating",
    "configure",
    "place",
    "copy",
    "move",
    "truncate",
    "rewrite",
    "drop",
    "disable",
    "enable",
    "lock",
    "unlock",
    "empty",
    "clear",
    "belongs",
    "goes",
    "go",
    "include",
    "includes",
    "contain",
    "contains",
];
/// Words right before a path that make it the object of a write verb.
const TARGET_WORDS: &[&str] = &[
    "to", "into", "in", "inside", "under", "from", "within", "on", "onto", ">", ">>", "of",
];
/// Filler between that word and the path.
const FILLER: &[&str] = &[
    "the",
    "a",
    "an",
    "file",
    "files",
    "config",
    "configuration",
    "directory",
    "dir",
];

/// Paths a sentence tells the worker to write: it has a write verb, and
/// the path is that verb's object or follows a target preposition.
fn written_in_prose(sentence: &str) -> Vec<String> {
    let raw: Vec<&str> = sentence
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| "`\"'(),;:!?".contains(c)))
        .collect();
    let words: Vec<String> = raw.iter().map(|w| w.to_lowercase()).collect();
    if !words.iter().any(|w| WRITE_VERBS.contains(&w.as_str())) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let is_path = w.starts_with('/') || w.starts_with("~/") || w.contains("authorized_keys");
        if !is_path {
            continue;
        }
        let before = words[..i]
            .iter()
            .rev()
            .find(|b| !FILLER.contains(&b.as_str()))
            .map(String::as_str)
            .unwrap_or("");
        if WRITE_VERBS.contains(&before) || TARGET_WORDS.contains(&before) {
            out.push((*w).to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests;
