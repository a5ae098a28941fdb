//! The promotion gate stack (DESIGN D7): a pure, deterministic function
//! from a candidate (lesson, ban or skill) and what is already accepted to
//! a verdict with every gate's result.
//!
//! Every gate runs and is recorded, in this order:
//!
//! 1. `evidence`: the candidate comes from an accepted lease (else REJECT);
//!    it has evidence — for a skill, its attempt passed the Evaluator; for
//!    a lesson or ban, a later attempt of the same lease passed — else
//!    DEFER, and REJECT once it was deferred [`MAX_DEFERRALS`] times.
//! 2. `duplicates`: a near-duplicate of something accepted (same kind and
//!    family, for skills the same rule; equal normalized text or word
//!    2-shingle Jaccard ≥ [`NEAR_DUPLICATE_JACCARD`]; for bans also an
//!    equal pattern). A lesson or ban **merges** into it ([`merge`]): the
//!    gates below judge the merged text, and an APPLY rewrites the accepted
//!    file. A skill is REJECTed as a duplicate; one whose lease replayed
//!    the rule's skill on `main` and saw it fail (DESIGN H1) is not
//!    compared with that skill: it replaces it.
//! 3. `injection`: instruction-like text ([`fleet_common::injection`]), in
//!    the candidate and, for a merge, in the merged text.
//! 4. `size_and_specificity`: lessons and bans are short but concrete;
//!    a ban's pattern compiles as agents compile it and matches no ordinary
//!    hardening command; a skill's script is bounded and passes the script
//!    screen ([`fleet_common::script_screen`]).
//! 5. `always_escalate`: the rule is on the pack's always-escalate list.
//! 6. `escalate_touching`: the script or text writes or runs something on
//!    the content list ([`touching`]: PAM, sudoers, account databases, …,
//!    plus the pack's additions); the detail names each match.
//!
//! The verdict is by precedence: any failed gate → REJECT (the first
//! failure is the reason); else any escalation → ESCALATE (every
//! escalating gate's detail is the reason); else any deferral → DEFER;
//! else APPLY. Nothing here reads the clock, the database or git, and ties
//! are broken by id, so the same input always gives the same [`Decision`].

mod merge;
mod shell;
mod text;
pub mod touching;

use std::cmp::Ordering;

use fleet_common::lesson::MAX_BAN_PATTERN_CHARS;
use fleet_common::{injection, script_screen};
use serde::Serialize;

pub use merge::{merge_text, MergedText};
use text::{jaccard, normalized_words, shingles};
pub use touching::{Sensitive, Touch};

/// A candidate without evidence is deferred this many times, then rejected.
pub const MAX_DEFERRALS: u32 = 2;
/// Word 2-shingle Jaccard similarity from which two texts are duplicates.
pub const NEAR_DUPLICATE_JACCARD: f64 = 0.7;
/// Bounds of a lesson's or ban's text, in characters.
pub const MIN_TEXT_CHARS: usize = 20;
pub const MAX_TEXT_CHARS: usize = 600;
/// Fewest words a lesson or ban explanation may have.
pub const MIN_TEXT_WORDS: usize = 4;
/// Largest skill script, in bytes.
pub const MAX_SKILL_BYTES: usize = 64 * 1024;

/// The gates, in the order they run and are recorded.
pub const GATES: [&str; 6] = [
    "evidence",
    "duplicates",
    "injection",
    "size_and_specificity",
    "always_escalate",
    "escalate_touching",
];
/// Most matches an `escalate_touching` detail names.
const MAX_TOUCHES_NAMED: usize = 8;

/// What sends a candidate to a human whatever else the gates say: the
/// pack's always-escalate rule globs, and what it touches.
pub struct Escalation<'a> {
    pub rule: &'a (dyn Fn(&str) -> bool + Sync),
    pub touching: Sensitive,
}

/// Lines of ordinary hardening scripts: a ban pattern that matches one of
/// them would refuse ordinary fixes ("too broad").
const ORDINARY_COMMANDS: &[&str] = &[
    "set -euo pipefail",
    "apt-get update",
    "apt-get install -y auditd",
    "apt-get install -y -q libpam-pwquality",
    "DEBIAN_FRONTEND=noninteractive apt-get install -y aide",
    "systemctl enable --now auditd",
    "systemctl restart sshd",
    "service auditd restart",
    "sed -i 's/^#\\?PermitRootLogin.*/PermitRootLogin no/' /etc/ssh/sshd_config",
    "grep -q '^PASS_MAX_DAYS' /etc/login.defs || echo 'PASS_MAX_DAYS 60' >> /etc/login.defs",
    "cp /etc/ssh/sshd_config /etc/ssh/sshd_config.bak",
    "chmod 0640 /etc/shadow",
    "chmod 0600 /boot/grub/grub.cfg",
    "chown root:root /etc/passwd",
    "chgrp shadow /etc/gshadow",
    "echo 'kernel.randomize_va_space = 2' > /etc/sysctl.d/99-aslr.conf",
    "sysctl -w kernel.randomize_va_space=2",
    "sysctl --system",
    "mkdir -p /etc/audit/rules.d",
    "echo '-w /etc/passwd -p wa -k identity' >> /etc/audit/rules.d/identity.rules",
    "augenrules --load",
    "touch /etc/security/opasswd",
    "useradd -D -f 35",
    "usermod -L games",
    "mount -o remount,nodev /tmp",
    "printf '%s\\n' 'install usb-storage /bin/true' > /etc/modprobe.d/usb-storage.conf",
    "rm -f /etc/hosts.equiv",
    "if [ -f /etc/ssh/sshd_config ]; then",
    "fi",
    "exit 0",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateKind {
    Lesson,
    Ban,
    Skill,
}

impl CandidateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lesson => "lesson",
            Self::Ban => "ban",
            Self::Skill => "skill",
        }
    }
}

/// The accepted lease a candidate came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    pub run: i64,
    pub agent: String,
    pub epoch: i64,
    pub attempt: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub id: String,
    pub kind: CandidateKind,
    pub family: String,
    pub rule: String,
    /// Lesson text, ban explanation, or the skill's script.
    pub text: String,
    /// Bans only: the regular expression scripts must not match.
    pub pattern: Option<String>,
    /// `None`: its lease's outcome was not the accepted one (lost lease,
    /// stale completion).
    pub provenance: Option<Provenance>,
    /// Skill: the script's attempt passed the Evaluator. Lesson or ban: a
    /// later attempt of the same lease passed.
    pub evidence: bool,
    /// How many times it was DEFERred before.
    pub deferrals: u32,
    /// Skills only: the script of `main`'s skill that this candidate's
    /// lease replayed and saw fail (DESIGN H1).
    pub refuted_skill: Option<String>,
}

/// Something already accepted: on `main`, or APPLIED earlier in this pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Existing {
    pub id: String,
    pub kind: CandidateKind,
    pub family: String,
    pub rule: Option<String>,
    pub text: String,
    pub pattern: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Apply,
    Reject,
    Escalate,
    Defer,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "APPLY",
            Self::Reject => "REJECT",
            Self::Escalate => "ESCALATE",
            Self::Defer => "DEFER",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    Pass,
    Fail,
    Escalate,
    Defer,
}

impl GateOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Escalate => "escalate",
            Self::Defer => "defer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateResult {
    pub gate: &'static str,
    pub outcome: GateOutcome,
    pub detail: String,
}

impl GateResult {
    fn new(gate: &'static str, outcome: GateOutcome, detail: impl Into<String>) -> Self {
        GateResult {
            gate,
            outcome,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Every gate, in [`GATES`] order.
    pub gates: Vec<GateResult>,
    /// The accepted item this candidate merges into (lesson, ban), or the
    /// skill it duplicates when that is why it was rejected.
    pub merged_into: Option<String>,
    /// A lesson or ban merging into `merged_into`: the text the accepted
    /// file gets on APPLY.
    pub merge: Option<MergedText>,
    pub reason: String,
}

/// Runs every gate on `c` against `existing` and decides.
pub fn decide(c: &Candidate, existing: &[Existing], escalation: &Escalation<'_>) -> Decision {
    let found = near_duplicate(c, existing);
    // A near-duplicate lesson or ban merges: what lands is the merged text,
    // so that is what the content gates judge.
    let merge = match (&found.best, c.kind) {
        (Some(best), CandidateKind::Lesson | CandidateKind::Ban) => {
            Some((best.existing, merge_text(&best.existing.text, &c.text)))
        }
        _ => None,
    };
    let merged = merge.as_ref().map(|(into, m)| Candidate {
        text: m.text.clone(),
        pattern: into.pattern.clone(),
        ..c.clone()
    });
    let subject = merged.as_ref().unwrap_or(c);
    let mut injection = injection_screen(c, "");
    if injection.outcome == GateOutcome::Pass && merged.is_some() {
        injection = injection_screen(subject, "merged ");
    }
    let gates = vec![
        evidence(c),
        duplicates(&found, merge.as_ref()),
        injection,
        size_and_specificity(subject),
        always_escalate(c, escalation.rule),
        escalate_touching(subject, &escalation.touching),
    ];
    let first = |outcome: GateOutcome| gates.iter().find(|g| g.outcome == outcome);
    let (verdict, reason) = if let Some(g) = first(GateOutcome::Fail) {
        (Verdict::Reject, g.detail.clone())
    } else if first(GateOutcome::Escalate).is_some() {
        let details: Vec<&str> = gates
            .iter()
            .filter(|g| g.outcome == GateOutcome::Escalate)
            .map(|g| g.detail.as_str())
            .collect();
        (Verdict::Escalate, details.join("; "))
    } else if let Some(g) = first(GateOutcome::Defer) {
        (Verdict::Defer, g.detail.clone())
    } else {
        (Verdict::Apply, "every gate passed".to_owned())
    };
    // A merge names its target whatever its verdict; a skill names what it
    // duplicates only when that is why it was rejected.
    let duplicate_rejected = first(GateOutcome::Fail).is_some_and(|g| g.gate == "duplicates");
    let merged_into = found
        .best
        .as_ref()
        .filter(|_| merge.is_some() || duplicate_rejected)
        .map(|b| b.existing.id.clone());
    Decision {
        verdict,
        gates,
        merged_into,
        merge: merge.map(|(_, m)| m),
        reason,
    }
}

fn evidence(c: &Candidate) -> GateResult {
    use GateOutcome::*;
    const GATE: &str = "evidence";
    let Some(p) = &c.provenance else {
        return GateResult::new(GATE, Fail, "no accepted lease behind it");
    };
    let what = match c.kind {
        CandidateKind::Skill => "an Evaluator pass of its script",
        CandidateKind::Lesson | CandidateKind::Ban => "a later passing attempt of its lease",
    };
    if c.evidence {
        return GateResult::new(
            GATE,
            Pass,
            format!(
                "accepted lease (run {}, agent {}, epoch {}, attempt {}) with {what}",
                p.run, p.agent, p.epoch, p.attempt
            ),
        );
    }
    if c.deferrals >= MAX_DEFERRALS {
        let runs = c.deferrals + 1;
        return GateResult::new(
            GATE,
            Fail,
            format!("no evidence after {runs} runs (needs {what})"),
        );
    }
    GateResult::new(
        GATE,
        Defer,
        format!(
            "no evidence yet (needs {what}); deferral {} of {MAX_DEFERRALS}",
            c.deferrals + 1
        ),
    )
}

/// The closest accepted item at or above the threshold.
struct Best<'a> {
    existing: &'a Existing,
    similarity: f64,
    why: &'static str,
}

struct Found<'a> {
    best: Option<Best<'a>>,
    /// A skill on `main` that failed its replay in the candidate's lease.
    replaces: Option<&'a str>,
}

fn near_duplicate<'a>(c: &Candidate, existing: &'a [Existing]) -> Found<'a> {
    let words = normalized_words(&c.text);
    let mine = shingles(&words);
    let pattern = c
        .pattern
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    // What failed on a target is no standard to merge a working fix into.
    let refuted = c.refuted_skill.as_deref().map(normalized_words);
    let is_refuted = |e: &Existing| {
        e.kind == CandidateKind::Skill && refuted.as_ref() == Some(&normalized_words(&e.text))
    };
    let mut replaces = None;
    let mut best: Option<Best<'a>> = None;
    for e in existing.iter().filter(|e| comparable(c, e)) {
        if is_refuted(e) {
            replaces = Some(e.id.as_str());
            continue;
        }
        let (similarity, why) = if c.kind == CandidateKind::Ban
            && pattern.is_some()
            && pattern == e.pattern.as_deref().map(str::trim)
        {
            (1.0, "same ban pattern")
        } else {
            let other = normalized_words(&e.text);
            if other == words {
                (1.0, "same normalized text")
            } else {
                (jaccard(&mine, &shingles(&other)), "similar text")
            }
        };
        if similarity < NEAR_DUPLICATE_JACCARD {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => match similarity.total_cmp(&b.similarity) {
                Ordering::Greater => true,
                Ordering::Equal => e.id < b.existing.id,
                Ordering::Less => false,
            },
        };
        if better {
            best = Some(Best {
                existing: e,
                similarity,
                why,
            });
        }
    }
    Found { best, replaces }
}

fn duplicates(found: &Found<'_>, merge: Option<&(&Existing, MergedText)>) -> GateResult {
    const GATE: &str = "duplicates";
    let Some(b) = &found.best else {
        let detail = match found.replaces {
            Some(id) => format!("replaces {id}, which failed its replay in this lease"),
            None => "no near-duplicate accepted".to_owned(),
        };
        return GateResult::new(GATE, GateOutcome::Pass, detail);
    };
    let near = format!(
        "near-duplicate of {}: {}, similarity {:.2}",
        b.existing.id, b.why, b.similarity
    );
    let Some((_, m)) = merge else {
        return GateResult::new(GATE, GateOutcome::Fail, near);
    };
    let adds = match m.added.len() {
        0 => "adds nothing new (provenance only)".to_owned(),
        1 => "adds 1 sentence".to_owned(),
        n => format!("adds {n} sentences"),
    };
    let left_out = match m.left_out {
        0 => String::new(),
        n => format!(", {n} left out for size"),
    };
    GateResult::new(
        GATE,
        GateOutcome::Pass,
        format!("{near}; merges into it, {adds}{left_out}"),
    )
}

/// Same kind, and same family (skills: same rule).
fn comparable(c: &Candidate, e: &Existing) -> bool {
    e.kind == c.kind
        && match c.kind {
            CandidateKind::Skill => e.rule.as_deref() == Some(c.rule.as_str()),
            CandidateKind::Lesson | CandidateKind::Ban => e.family == c.family,
        }
}

/// `which` prefixes the detail (`"merged "` for a merge's text).
fn injection_screen(c: &Candidate, which: &str) -> GateResult {
    const GATE: &str = "injection";
    if let Err(finding) = injection::screen(&c.text) {
        return GateResult::new(GATE, GateOutcome::Fail, format!("{which}text: {finding}"));
    }
    if let Some(pattern) = &c.pattern {
        if let Err(finding) = injection::screen(pattern) {
            return GateResult::new(GATE, GateOutcome::Fail, format!("pattern: {finding}"));
        }
    }
    GateResult::new(GATE, GateOutcome::Pass, "no instruction-like text")
}

fn size_and_specificity(c: &Candidate) -> GateResult {
    const GATE: &str = "size_and_specificity";
    let checked = match c.kind {
        CandidateKind::Skill => skill_script(&c.text),
        CandidateKind::Lesson => explanation(&c.text, &c.rule),
        CandidateKind::Ban => explanation(&c.text, &c.rule).and_then(|text| {
            let pattern = ban_pattern(c.pattern.as_deref())?;
            Ok(format!("{text}; {pattern}"))
        }),
    };
    match checked {
        Ok(detail) => GateResult::new(GATE, GateOutcome::Pass, detail),
        Err(detail) => GateResult::new(GATE, GateOutcome::Fail, detail),
    }
}

/// A lesson's or ban's text: bounded, and concrete enough to act on.
fn explanation(text: &str, rule: &str) -> Result<String, String> {
    let text = text.trim();
    let chars = text.chars().count();
    if chars < MIN_TEXT_CHARS {
        return Err(format!(
            "too short: {chars} characters, at least {MIN_TEXT_CHARS}"
        ));
    }
    if chars > MAX_TEXT_CHARS {
        return Err(format!(
            "too long: {chars} characters, at most {MAX_TEXT_CHARS}"
        ));
    }
    let words = text.split_whitespace().count();
    if words < MIN_TEXT_WORDS {
        return Err(format!(
            "too vague: {words} words, at least {MIN_TEXT_WORDS}"
        ));
    }
    match concrete_token(text, rule) {
        Some(token) => Ok(format!("{chars} characters, {words} words, names {token}")),
        None => Err("too vague: names no path, command, setting or word of its rule".to_owned()),
    }
}

/// The first concrete thing `text` names: a quoted or backticked command,
/// a path, a token with `_`, `.`, `=` or `-` inside (or a command-line
/// flag), or a word (4+ characters) of the rule id.
fn concrete_token(text: &str, rule: &str) -> Option<String> {
    if let Some(quoted) = quoted(text) {
        return Some(format!("the quoted `{quoted}`"));
    }
    for raw in text.split_whitespace() {
        let token = raw.trim_matches(|c: char| ",;:!?()[]{}\"'`".contains(c));
        let token = token.trim_end_matches('.');
        let is_path = (token.starts_with('/') && token.len() > 1)
            || token.starts_with("./")
            || token.starts_with("../")
            || token.starts_with("~/")
            || token.matches('/').count() >= 2;
        if is_path {
            return Some(format!("the path {token}"));
        }
        let is_flag = token.starts_with('-')
            && token
                .trim_start_matches('-')
                .starts_with(|c: char| c.is_ascii_alphanumeric());
        let inner = token.trim_matches(|c: char| !c.is_alphanumeric());
        if is_flag || inner.contains(['_', '.', '=', '-']) {
            return Some(format!("the token {token}"));
        }
    }
    let short = rule
        .rsplit_once("content_rule_")
        .map_or(rule, |(_, short)| short)
        .to_lowercase();
    let words = normalized_words(text);
    short
        .split('_')
        .filter(|w| w.chars().count() >= 4)
        .find(|w| words.iter().any(|t| t == w))
        .map(|w| format!("the rule's word {w}"))
}

/// The first non-blank text between backticks or double quotes, or between
/// single quotes that open a word (so apostrophes do not pair up).
fn quoted(text: &str) -> Option<&str> {
    for q in ['`', '"', '\''] {
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find(q) {
            let at = offset + open;
            let opens_word = q != '\''
                || text[..at]
                    .chars()
                    .next_back()
                    .is_none_or(|c| c.is_whitespace() || "([{=".contains(c));
            let after = &text[at + 1..];
            if opens_word {
                if let Some(close) = after.find(q) {
                    let inner = &after[..close];
                    if !inner.trim().is_empty() && !inner.contains('\n') {
                        return Some(inner.trim());
                    }
                }
            }
            offset = at + 1;
            rest = after;
        }
    }
    None
}

/// A ban's pattern: present, bounded, compiled as agents compile it, and
/// matching no ordinary hardening command.
fn ban_pattern(pattern: Option<&str>) -> Result<String, String> {
    let pattern = pattern.unwrap_or("");
    if pattern.trim().is_empty() {
        return Err("ban without a pattern".to_owned());
    }
    let chars = pattern.chars().count();
    if chars > MAX_BAN_PATTERN_CHARS {
        return Err(format!(
            "ban pattern too long: {chars} characters, at most {MAX_BAN_PATTERN_CHARS}"
        ));
    }
    let re = script_screen::compile_ban(pattern).map_err(|e| {
        let message = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        format!("ban pattern does not compile: {message}")
    })?;
    if let Some(line) = ORDINARY_COMMANDS.iter().find(|l| re.is_match(l)) {
        return Err(format!(
            "too broad: the ban pattern matches the ordinary command `{line}`"
        ));
    }
    Ok(format!(
        "pattern matches none of {} ordinary commands",
        ORDINARY_COMMANDS.len()
    ))
}

/// A skill's script: non-empty, bounded, and through the script screen.
fn skill_script(script: &str) -> Result<String, String> {
    if script.trim().is_empty() {
        return Err("empty script".to_owned());
    }
    if script.len() > MAX_SKILL_BYTES {
        return Err(format!(
            "script too large: {} bytes, at most {MAX_SKILL_BYTES}",
            script.len()
        ));
    }
    script_screen::screen(script).map_err(|r| r.to_string())?;
    Ok(format!(
        "script of {} bytes passes the script screen",
        script.len()
    ))
}

fn always_escalate(c: &Candidate, always_escalates: &dyn Fn(&str) -> bool) -> GateResult {
    const GATE: &str = "always_escalate";
    if always_escalates(&c.rule) {
        GateResult::new(
            GATE,
            GateOutcome::Escalate,
            "rule on the pack's always-escalate list",
        )
    } else {
        GateResult::new(
            GATE,
            GateOutcome::Pass,
            "rule not on the always-escalate list",
        )
    }
}

fn escalate_touching(c: &Candidate, sensitive: &Sensitive) -> GateResult {
    const GATE: &str = "escalate_touching";
    let touches = match c.kind {
        CandidateKind::Skill => sensitive.in_script(&c.text),
        // A ban's pattern is what scripts must not do; its text is prose.
        CandidateKind::Lesson | CandidateKind::Ban => sensitive.in_prose(&c.text),
    };
    if touches.is_empty() {
        return GateResult::new(
            GATE,
            GateOutcome::Pass,
            "touches nothing on the escalation list",
        );
    }
    let mut named: Vec<String> = touches
        .iter()
        .take(MAX_TOUCHES_NAMED)
        .map(Touch::to_string)
        .collect();
    if touches.len() > MAX_TOUCHES_NAMED {
        named.push(format!("{} more", touches.len() - MAX_TOUCHES_NAMED));
    }
    GateResult::new(
        GATE,
        GateOutcome::Escalate,
        format!("touches {}", named.join(", ")),
    )
}

#[cfg(test)]
mod tests;
