//! What shell code does, as far as the escalation gate needs to know: the
//! paths it writes and the commands it runs. A small lexer (quotes,
//! operators, comments, here-documents, line continuations, simple
//! variables), not a shell: enough to tell `grep x /etc/passwd` (a read)
//! from `echo x >> /etc/passwd` (a write). Writes are redirections, `tee`,
//! in-place editors (`sed -i`, `perl -i`, `awk -i inplace`), the
//! destination of `cp`/`install`/`ln`, every operand of `mv`, `rm`, `chmod`,
//! `chown`, `truncate`, `touch` and the like, and the files of editors.

use std::collections::HashMap;

/// One simple command: its name (basename of the command word) and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Command {
    pub name: String,
    pub args: Vec<String>,
}

impl Command {
    /// `name args…`, cut for a ledger line.
    pub fn display(&self) -> String {
        let mut s = self.name.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        cut(&s, 80)
    }

    /// Arguments that are not options (after `--`, everything).
    pub fn operands(&self) -> Vec<&str> {
        operands(&self.args, &[])
    }

    pub fn has_option(&self, options: &[&str]) -> bool {
        self.args.iter().take_while(|a| *a != "--").any(|a| {
            options
                .iter()
                .any(|o| a == o || a.starts_with(&format!("{o}=")))
        })
    }
}

/// What a piece of shell code does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Effects {
    /// Paths written, in order, as written (variables expanded).
    pub writes: Vec<String>,
    /// Every simple command, in order.
    pub commands: Vec<Command>,
    /// Words of the commands that write something (kernel arguments,
    /// `SELINUX=` and the like are looked for there).
    pub written_words: Vec<String>,
}

/// The effects of a whole script: variables assigned on one line (and
/// `for` loop variables) are expanded on the next ones.
pub(super) fn script(text: &str) -> Effects {
    let mut out = Effects::default();
    let mut vars = Vars::default();
    let mut heredoc: Option<String> = None;
    let mut pending = String::new();
    for raw in text.lines() {
        if let Some(end) = &heredoc {
            // A here-document's body is data, not code.
            if raw.trim() == end {
                heredoc = None;
            }
            continue;
        }
        // Line continuation: `\` at the end joins the next line.
        if let Some(head) = raw.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(raw);
        let line = std::mem::take(&mut pending);
        heredoc = line_into(&line, &mut vars, &mut out);
    }
    if !pending.is_empty() {
        line_into(&pending, &mut vars, &mut out);
    }
    out
}

/// The effects of one line on its own (a code span of a lesson).
pub(super) fn line(text: &str) -> Effects {
    let mut out = Effects::default();
    line_into(text, &mut Vars::default(), &mut out);
    out
}

/// Adds one line's effects; returns the delimiter of a here-document it
/// opens.
fn line_into(line: &str, vars: &mut Vars, out: &mut Effects) -> Option<String> {
    let tokens = lex(line);
    let heredoc = tokens.windows(2).find_map(|w| match (&w[0], &w[1]) {
        (Tok::Op("<<" | "<<-"), Tok::Word(d)) => Some(d.clone()),
        _ => None,
    });
    for segment in tokens.split(|t| matches!(t, Tok::Op(op) if SEPARATORS.contains(op))) {
        segment_into(segment, vars, out);
    }
    heredoc
}

/// Operators that end a simple command.
const SEPARATORS: &[&str] = &[";", ";;", "&&", "||", "|", "|&", "&", "(", ")", "`"];
/// Redirections whose target is written.
const WRITE_REDIRECTS: &[&str] = &[">", ">>", ">|", "&>", "&>>", "<>"];
/// Redirections whose operand is no argument (input, here-docs, dups).
const OTHER_REDIRECTS: &[&str] = &["<", "<<", "<<-", "<<<", "<&", ">&"];
/// Words that come before the command word without being it.
const PREFIXES: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "esac", "!", "{", "}",
    "time", "sudo", "env", "command", "builtin", "exec", "nohup", "nice", "xargs", "local",
    "export", "declare", "readonly", "typeset",
];

fn segment_into(segment: &[Tok], vars: &mut Vars, out: &mut Effects) {
    let mut words = Vec::new();
    let mut writes = Vec::new();
    let mut it = segment.iter();
    while let Some(t) = it.next() {
        match t {
            Tok::Op(op) if WRITE_REDIRECTS.contains(op) => {
                if let Some(Tok::Word(w)) = it.next() {
                    writes.extend(vars.expand(w));
                }
            }
            Tok::Op(op) if OTHER_REDIRECTS.contains(op) => {
                it.next();
            }
            Tok::Op(_) => {}
            Tok::Word(w) => words.push(w.clone()),
        }
    }
    // `for NAME in words…`: NAME takes each word in turn.
    if let [first, name, kw, rest @ ..] = words.as_slice() {
        if first == "for" && kw == "in" {
            let values = rest.iter().flat_map(|w| vars.expand(w)).collect();
            vars.set(name, values);
            return;
        }
    }
    let mut start = 0;
    while let Some(w) = words.get(start) {
        if let Some((name, value)) = assignment(w) {
            let values = vars.expand(value);
            vars.set(name, values);
        } else {
            // A prefix's own options (`xargs -r`, `env -i`) are skipped too.
            let prefix = PREFIXES.contains(&w.as_str()) || (start > 0 && w.starts_with('-'));
            if !prefix {
                break;
            }
        }
        start += 1;
    }
    let mut expanded: Vec<String> = Vec::new();
    for w in &words[start.min(words.len())..] {
        expanded.extend(vars.expand(w));
    }
    let Some((name, args)) = expanded.split_first() else {
        out.writes.extend(writes);
        return;
    };
    let command = Command {
        name: name.rsplit('/').next().unwrap_or(name).to_owned(),
        args: args.to_vec(),
    };
    writes.extend(written_by(&command));
    if !writes.is_empty() {
        out.written_words.extend(expanded.iter().cloned());
    }
    out.writes.extend(writes);
    out.commands.push(command);
}

/// The operands a command writes.
fn written_by(c: &Command) -> Vec<String> {
    let a = &c.args;
    let own = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
    match c.name.as_str() {
        "tee" | "sponge" | "rm" | "unlink" | "shred" | "touch" | "mkdir" | "rmdir" | "mv"
        | "vi" | "vim" | "nano" | "ed" | "ex" | "emacs" | "vipw" | "vigr" | "sudoedit" => {
            own(operands(a, &["-m", "-s", "-n", "-u"]))
        }
        // `visudo -c` only checks; otherwise it edits `-f FILE` (or sudoers).
        "visudo" if c.has_option(&["-c", "--check"]) => Vec::new(),
        "visudo" => vec![option_value(a, &["-f", "--file"])
            .unwrap_or("/etc/sudoers")
            .to_owned()],
        "truncate" => own(operands(a, &["-s", "--size", "-r", "--reference"])),
        // `+i`, `-i`, `=aA`: the attributes, not a file.
        "chattr" => own(a
            .iter()
            .map(String::as_str)
            .filter(|w| !w.starts_with(['+', '-', '=']))
            .collect()),
        "chmod" | "chown" | "chgrp" | "setfacl" => {
            let mut ops = operands(a, &["-m", "-x", "-M", "-X", "--from", "-v"]);
            // The mode, owner or attributes come first, unless --reference.
            if !c.has_option(&["--reference"]) && !c.has_option(&["-m", "-x", "-M", "-X"]) {
                ops = ops.into_iter().skip(1).collect();
            }
            own(ops)
        }
        "cp" | "install" | "ln" | "rsync" => {
            let takes = [
                "-t",
                "--target-directory",
                "-m",
                "--mode",
                "-o",
                "--owner",
                "-g",
                "--group",
                "-S",
                "--suffix",
            ];
            if let Some(dir) = option_value(a, &["-t", "--target-directory"]) {
                return vec![dir.to_owned()];
            }
            let ops = operands(a, &takes);
            if c.name == "install" && c.has_option(&["-d", "--directory"]) {
                return own(ops);
            }
            own(ops.last().into_iter().copied().collect())
        }
        "dd" => a
            .iter()
            .filter_map(|w| w.strip_prefix("of="))
            .map(str::to_owned)
            .collect(),
        "sed" if in_place(a) => {
            let scripted = c.has_option(&["-e", "--expression", "-f", "--file"]);
            let ops = operands(a, &["-e", "--expression", "-f", "--file", "-l"]);
            own(ops.into_iter().skip(usize::from(!scripted)).collect())
        }
        "perl" if in_place(a) => own(operands(a, &["-e", "-E", "-I", "-M"])),
        "awk" | "gawk" if a.windows(2).any(|w| w[0] == "-i" && w[1] == "inplace") => {
            let scripted = c.has_option(&["-f"]);
            let ops = operands(a, &["-i", "-F", "-v", "-f"]);
            own(ops.into_iter().skip(usize::from(!scripted)).collect())
        }
        "crudini" if c.has_option(&["--set", "--del"]) => {
            own(operands(a, &[]).into_iter().take(1).collect())
        }
        "find" => find_exec_writes(a),
        _ => Vec::new(),
    }
}

/// `find ROOTS… -exec CMD … {} ;`: a writing CMD writes under each root.
fn find_exec_writes(args: &[String]) -> Vec<String> {
    let Some(at) = args
        .iter()
        .position(|w| matches!(w.as_str(), "-exec" | "-execdir" | "-ok" | "-delete"))
    else {
        return Vec::new();
    };
    let roots: Vec<String> = args[..at]
        .iter()
        .take_while(|w| !w.starts_with('-') && *w != "(" && *w != "!")
        .cloned()
        .collect();
    if args[at] == "-delete" {
        return roots;
    }
    let inner: Vec<String> = args[at + 1..]
        .iter()
        .take_while(|w| *w != ";" && *w != "+")
        .cloned()
        .collect();
    let Some((name, rest)) = inner.split_first() else {
        return Vec::new();
    };
    let c = Command {
        name: name.clone(),
        args: rest.to_vec(),
    };
    if written_by(&c).iter().any(|w| w == "{}") {
        roots
    } else {
        Vec::new()
    }
}

/// `-i`, `-i.bak`, `-ri`, `-pi`, `--in-place[=…]`: a short option
/// cluster with `i` in it, or the long option.
fn in_place(args: &[String]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| {
        let cluster = a.strip_prefix('-').filter(|f| !f.starts_with('-'));
        a == "--in-place"
            || a.starts_with("--in-place=")
            || cluster.is_some_and(|f| f.split('.').next().is_some_and(|f| f.contains('i')))
    })
}

/// Non-option arguments; `takes_value` options consume the next word.
fn operands<'a>(args: &'a [String], takes_value: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            out.extend(it.map(String::as_str));
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            if takes_value.contains(&a.as_str()) {
                it.next();
            }
            continue;
        }
        out.push(a.as_str());
    }
    out
}

fn option_value<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        for n in names {
            if a == n {
                return it.next().map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                return Some(v);
            }
        }
    }
    None
}

fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((name, value))
}

/// Variables set in the script so far; at most a few values each.
#[derive(Default)]
struct Vars(HashMap<String, Vec<String>>);

impl Vars {
    const MAX_VALUES: usize = 32;

    fn set(&mut self, name: &str, mut values: Vec<String>) {
        values.truncate(Self::MAX_VALUES);
        self.0.insert(name.to_owned(), values);
    }

    /// `$NAME` and `${NAME}` replaced by each known value; unknown
    /// variables stay as they are.
    fn expand(&self, word: &str) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut rest = word;
        while let Some(at) = rest.find('$') {
            let (head, tail) = rest.split_at(at);
            out.iter_mut().for_each(|o| o.push_str(head));
            let (name, after) = match tail[1..].strip_prefix('{') {
                Some(inner) => match inner.find('}') {
                    Some(end) => (&inner[..end], &inner[end + 1..]),
                    None => ("", &tail[1..]),
                },
                None => {
                    let end = tail[1..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(tail.len() - 1);
                    (&tail[1..1 + end], &tail[1 + end..])
                }
            };
            match self.0.get(name).filter(|v| !v.is_empty()) {
                Some(values) => {
                    out = out
                        .iter()
                        .flat_map(|o| values.iter().map(move |v| format!("{o}{v}")))
                        .take(Self::MAX_VALUES)
                        .collect();
                }
                None => {
                    let literal = &tail[..tail.len() - after.len()];
                    out.iter_mut().for_each(|o| o.push_str(literal));
                }
            }
            rest = after;
        }
        out.iter_mut().for_each(|o| o.push_str(rest));
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Op(&'static str),
}

/// Longest first, so `>>` is not read as two `>`.
const OPERATORS: &[&str] = &[
    "&>>", "<<<", "<<-", "&&", "||", ";;", "|&", "&>", ">>", ">|", ">&", "<<", "<&", "<>", ";",
    "|", "&", "(", ")", ">", "<", "`",
];

/// Words (quotes removed) and operators; `#` at a word's start comments out
/// the rest; a file-descriptor number before a redirection is dropped.
fn lex(line: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            _ if c.is_whitespace() => {
                if in_word {
                    out.push(Tok::Word(std::mem::take(&mut word)));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                for (_, q) in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some((_, q)) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                if !matches!(e, '"' | '\\' | '$' | '`') {
                                    word.push('\\');
                                }
                                word.push(e);
                            }
                        }
                        _ => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some((_, e)) = chars.next() {
                    word.push(e);
                }
            }
            '$' if line[i..].starts_with("$(") && !line[i..].starts_with("$((") => {
                // Command substitution: its commands are commands too.
                if in_word {
                    out.push(Tok::Word(std::mem::take(&mut word)));
                    in_word = false;
                }
                out.push(Tok::Op("("));
                chars.next();
            }
            _ => {
                let op = OPERATORS.iter().find(|op| line[i..].starts_with(**op));
                match op {
                    Some(op) => {
                        let fd = in_word
                            && !word.is_empty()
                            && word.chars().all(|d| d.is_ascii_digit())
                            && (op.starts_with('>') || op.starts_with('<'));
                        if fd {
                            word.clear();
                        } else if in_word {
                            out.push(Tok::Word(std::mem::take(&mut word)));
                        }
                        in_word = false;
                        for _ in 1..op.len() {
                            chars.next();
                        }
                        out.push(Tok::Op(op));
                    }
                    None => {
                        in_word = true;
                        word.push(c);
                    }
                }
            }
        }
    }
    if in_word {
        out.push(Tok::Word(word));
    }
    out
}

pub(super) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
