//! K4: what `main` holds and how each file is written.
//!
//! ```text
//! lessons/<family>/<id>.md   front matter + markdown body (`LessonFile`)
//! skills/<rule>.sh           fixes that passed the Evaluator
//! ranking.json               published by the dream stage (`Ranking`)
//! packs/<pack>/…             the skill packs the repo was initialised from
//! ```
//!
//! A lesson file looks like this (the scope is a JSON string, which is also
//! a valid YAML double-quoted scalar, so any text round-trips):
//!
//! ```text
//! ---
//! id: no-empty-passwords-1
//! kind: lesson
//! family: accounts
//! scope: "rules touching /etc/shadow"
//! pattern: "passwd -d"          (bans only: the regex a script must not match)
//! provenance:
//!   run: r-42
//!   attempt: 2
//!   agent: agent-7
//!   source_commit: 3f2a…(40 hex) or ~
//!   merged: [{"id":"…","run":"r-43","agent":"agent-2","epoch":5,"attempt":1,"source_commit":null}]
//!                               (only after a merge: the near-duplicates
//!                                merged into this lesson, oldest first)
//! ---
//! body…
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::component::validate_component;
use crate::KnowledgeError;

/// Where the published ranking lives on `main`.
pub const RANKING_PATH: &str = "ranking.json";

/// `lessons/<family>/<id>.md`, with both components validated.
pub fn lesson_path(family: &str, id: &str) -> Result<String, KnowledgeError> {
    validate_component("family", family)?;
    validate_component("lesson id", id)?;
    Ok(format!("lessons/{family}/{id}.md"))
}

/// `skills/<rule>.sh`, with the rule validated.
pub fn skill_path(rule: &str) -> Result<String, KnowledgeError> {
    validate_component("rule", rule)?;
    Ok(format!("skills/{rule}.sh"))
}

/// What a lesson file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LessonKind {
    Lesson,
    Ban,
    Skill,
}

impl LessonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LessonKind::Lesson => "lesson",
            LessonKind::Ban => "ban",
            LessonKind::Skill => "skill",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "lesson" => Some(LessonKind::Lesson),
            "ban" => Some(LessonKind::Ban),
            "skill" => Some(LessonKind::Skill),
            _ => None,
        }
    }
}

/// Where a lesson came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub run: String,
    pub attempt: u32,
    pub agent: String,
    /// The commit (hex) of the agent branch the lesson was taken from, if any.
    pub source_commit: Option<String>,
    /// Near-duplicates merged into this lesson by the dream stage (D7),
    /// oldest first; empty for most lessons (and then not written).
    pub merged: Vec<MergedFrom>,
}

/// Where a near-duplicate merged into a lesson came from: its candidate id
/// and lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergedFrom {
    pub id: String,
    pub run: String,
    pub agent: String,
    pub epoch: i64,
    pub attempt: u32,
    pub source_commit: Option<String>,
}

/// One `lessons/<family>/<id>.md` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonFile {
    pub id: String,
    pub kind: LessonKind,
    pub family: String,
    /// Which rules the lesson applies to: `family`, `rule:<rule id>`, or
    /// free text (treated as the family).
    pub scope: String,
    /// Bans only: the regular expression a script must not match.
    pub pattern: Option<String>,
    pub provenance: Provenance,
    pub body: String,
}

impl LessonFile {
    /// Check every component that ends up in a path or a front-matter line.
    pub fn validate(&self) -> Result<(), KnowledgeError> {
        validate_component("lesson id", &self.id)?;
        validate_component("family", &self.family)?;
        validate_component("run", &self.provenance.run)?;
        validate_component("agent", &self.provenance.agent)?;
        if (self.kind == LessonKind::Ban) != self.pattern.is_some() {
            return Err(KnowledgeError::Malformed(
                "a ban needs a pattern, and only a ban has one".into(),
            ));
        }
        let commits = std::iter::once(&self.provenance.source_commit)
            .chain(self.provenance.merged.iter().map(|m| &m.source_commit));
        for c in commits.flatten() {
            if !is_hex_oid(c) {
                return Err(KnowledgeError::Malformed(
                    "source_commit is not a hex object id".into(),
                ));
            }
        }
        for m in &self.provenance.merged {
            validate_component("merged lesson id", &m.id)?;
            validate_component("merged run", &m.run)?;
            validate_component("merged agent", &m.agent)?;
        }
        Ok(())
    }

    /// The path of this lesson on `main`.
    pub fn path(&self) -> Result<String, KnowledgeError> {
        lesson_path(&self.family, &self.id)
    }

    /// The file's text. Call [`LessonFile::validate`] first if the values
    /// come from outside; `render` itself never fails.
    pub fn render(&self) -> String {
        let scope = serde_json::to_string(&self.scope).expect("a string always serialises");
        let commit = self.provenance.source_commit.as_deref().unwrap_or("~");
        let pattern = match &self.pattern {
            Some(p) => format!(
                "pattern: {}\n",
                serde_json::to_string(p).expect("a string always serialises")
            ),
            None => String::new(),
        };
        // A JSON array is also a YAML flow sequence: one line, any text.
        let merged = if self.provenance.merged.is_empty() {
            String::new()
        } else {
            format!(
                "  merged: {}\n",
                serde_json::to_string(&self.provenance.merged).expect("always serialises")
            )
        };
        format!(
            "---\nid: {}\nkind: {}\nfamily: {}\nscope: {}\n{}provenance:\n  run: {}\n  attempt: {}\n  agent: {}\n  source_commit: {}\n{}---\n{}",
            self.id,
            self.kind.as_str(),
            self.family,
            scope,
            pattern,
            self.provenance.run,
            self.provenance.attempt,
            self.provenance.agent,
            commit,
            merged,
            self.body
        )
    }

    /// Parse a lesson file; malformed front matter is an error, never a panic.
    pub fn parse(text: &str) -> Result<LessonFile, KnowledgeError> {
        let bad = |m: &str| KnowledgeError::Malformed(m.to_string());
        let rest = text
            .strip_prefix("---\n")
            .ok_or_else(|| bad("missing opening ---"))?;
        let (front, body) = if let Some(i) = rest.find("\n---\n") {
            (&rest[..i], &rest[i + 5..])
        } else if let Some(front) = rest.strip_suffix("\n---") {
            (front, "")
        } else {
            return Err(bad("missing closing ---"));
        };

        let mut top = Fields::default();
        let mut prov = Fields::default();
        let mut in_provenance = false;
        for line in front.lines() {
            if let Some(inner) = line.strip_prefix("  ") {
                if !in_provenance {
                    return Err(bad("indented line outside provenance"));
                }
                let (k, v) = split_field(inner)?;
                prov.insert(
                    k,
                    v,
                    &["run", "attempt", "agent", "source_commit", "merged"],
                )?;
            } else if line == "provenance:" {
                if in_provenance || top.has("provenance") {
                    return Err(bad("duplicate provenance"));
                }
                top.insert("provenance", "", &["provenance"])?;
                in_provenance = true;
            } else {
                in_provenance = false;
                let (k, v) = split_field(line)?;
                top.insert(k, v, &["id", "kind", "family", "scope", "pattern"])?;
            }
        }

        let kind = LessonKind::parse(top.get("kind")?)
            .ok_or_else(|| bad("kind must be lesson, ban or skill"))?;
        let scope: String = serde_json::from_str(top.get("scope")?)
            .map_err(|_| bad("scope must be a double-quoted string"))?;
        let pattern = if top.has("pattern") {
            Some(
                serde_json::from_str::<String>(top.get("pattern")?)
                    .map_err(|_| bad("pattern must be a double-quoted string"))?,
            )
        } else {
            None
        };
        let attempt = prov
            .get("attempt")?
            .parse::<u32>()
            .map_err(|_| bad("attempt must be a non-negative integer"))?;
        let source_commit = match prov.get("source_commit")? {
            "~" => None,
            c => Some(c.to_string()),
        };
        if !top.has("provenance") {
            return Err(bad("missing provenance"));
        }
        let merged = if prov.has("merged") {
            serde_json::from_str::<Vec<MergedFrom>>(prov.get("merged")?)
                .map_err(|_| bad("merged must be a JSON list of merged lessons"))?
        } else {
            Vec::new()
        };
        let lesson = LessonFile {
            id: top.get("id")?.to_string(),
            kind,
            family: top.get("family")?.to_string(),
            scope,
            pattern,
            provenance: Provenance {
                run: prov.get("run")?.to_string(),
                attempt,
                agent: prov.get("agent")?.to_string(),
                source_commit,
                merged,
            },
            body: body.to_string(),
        };
        lesson.validate()?;
        Ok(lesson)
    }
}

fn is_hex_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn split_field(line: &str) -> Result<(&str, &str), KnowledgeError> {
    let (k, v) = line.split_once(": ").ok_or_else(|| {
        KnowledgeError::Malformed("a front-matter line is not `key: value`".into())
    })?;
    Ok((k, v.trim_end()))
}

/// Key/value pairs of one front-matter level; each key once, only known keys.
#[derive(Default)]
struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    fn insert(&mut self, k: &'a str, v: &'a str, allowed: &[&str]) -> Result<(), KnowledgeError> {
        if !allowed.contains(&k) {
            return Err(KnowledgeError::Malformed(format!("unknown key {k:?}")));
        }
        if self.has(k) {
            return Err(KnowledgeError::Malformed(format!("duplicate key {k:?}")));
        }
        self.0.push((k, v));
        Ok(())
    }

    fn has(&self, k: &str) -> bool {
        self.0.iter().any(|(key, _)| *key == k)
    }

    fn get(&self, k: &str) -> Result<&'a str, KnowledgeError> {
        self.0
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .ok_or_else(|| KnowledgeError::Malformed(format!("missing key {k:?}")))
    }
}

/// The ranking the dream stage publishes on `main`, read by agents.
/// Fields a newer coordinator adds are ignored, so agents need not be
/// upgraded first; a change agents must understand bumps `version`, which
/// they refuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    /// Format version; 1 for now.
    pub version: u32,
    /// Ranked lessons, best first. Empty until the dream stage runs.
    #[serde(default)]
    pub lessons: Vec<RankedLesson>,
    /// Per family, the score a lesson with no data of its own gets (D2).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub priors: BTreeMap<String, f64>,
    /// The prior of a family missing from `priors` (no attempt yet): every
    /// family's attempts pooled, no higher than the lowest family prior.
    /// Absent from rankings published before it existed and while no
    /// attempt has been evaluated; agents then take a low constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_prior: Option<f64>,
}

impl Default for Ranking {
    fn default() -> Self {
        Ranking {
            version: 1,
            lessons: Vec::new(),
            priors: BTreeMap::new(),
            pack_prior: None,
        }
    }
}

/// One entry of [`Ranking`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedLesson {
    pub family: String,
    /// Set on a per-(rule, lesson) score, which agents prefer for that rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub id: String,
    pub score: f64,
}

impl Ranking {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a ranking always serialises");
        v.push(b'\n');
        v
    }

    /// The format this build reads.
    pub const VERSION: u32 = 1;

    pub fn from_json(bytes: &[u8]) -> Result<Ranking, KnowledgeError> {
        let r: Ranking = serde_json::from_slice(bytes)?;
        if r.version > Self::VERSION {
            return Err(KnowledgeError::Malformed(format!(
                "ranking.json is format version {}, this build reads {}: upgrade the agent",
                r.version,
                Self::VERSION
            )));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LessonFile {
        LessonFile {
            id: "no-empty-passwords-1".into(),
            kind: LessonKind::Ban,
            family: "accounts".into(),
            scope: "rules touching \"/etc/shadow\"\nand: more".into(),
            pattern: Some("passwd\\s+-d \"x\"".into()),
            provenance: Provenance {
                run: "r-42".into(),
                attempt: 2,
                agent: "agent-7".into(),
                source_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                merged: Vec::new(),
            },
            body: "Do not run `passwd -d`.\n---\nstill body\n".into(),
        }
    }

    #[test]
    fn render_parse_round_trip() {
        let l = sample();
        assert_eq!(LessonFile::parse(&l.render()).unwrap(), l);
        let mut l2 = sample();
        l2.provenance.source_commit = None;
        l2.body = String::new();
        l2.kind = LessonKind::Skill;
        l2.pattern = None;
        assert_eq!(LessonFile::parse(&l2.render()).unwrap(), l2);
        assert_eq!(
            l.path().unwrap(),
            "lessons/accounts/no-empty-passwords-1.md"
        );
    }

    #[test]
    fn merged_provenance_round_trips_and_is_validated() {
        let mut l = sample();
        let merged = |id: &str, commit: Option<&str>| MergedFrom {
            id: id.into(),
            run: "r-43".into(),
            agent: "agent-2".into(),
            epoch: (1 << 20) | 3,
            attempt: 1,
            source_commit: commit.map(str::to_owned),
        };
        l.provenance.merged = vec![
            merged("no-empty-passwords-2", None),
            merged("x", Some("89abcdef0123456789abcdef0123456789abcdef")),
        ];
        let text = l.render();
        assert!(
            text.contains("\n  merged: [{\"id\":\"no-empty-passwords-2\""),
            "{text}"
        );
        assert_eq!(LessonFile::parse(&text).unwrap(), l);
        // Without merges the key is not written at all.
        assert!(!sample().render().contains("merged"));
        for bad in [
            text.replace("\"id\":\"x\"", "\"id\":\"../x\""),
            text.replace("89abcdef0123", "zzabcdef0123"),
            text.replace("  merged: [{", "  merged: {["),
            text.replace("\"epoch\"", "\"colour\""),
        ] {
            assert!(LessonFile::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_front_matter_is_rejected() {
        let good = sample().render();
        let cases = [
            String::new(),
            "no front matter".to_string(),
            good.replacen("---\n", "", 1),
            good.replace("\n---\nDo", "\nDo")
                .replace("\n---\nstill", "\nstill"),
            good.replace("kind: ban", "kind: rumour"),
            good.replace("kind: ban\n", ""),
            good.replace("attempt: 2", "attempt: -1"),
            good.replace("attempt: 2", "attempt: two"),
            good.replace("family: accounts", "family: ../etc"),
            good.replace("id: no-empty-passwords-1", "id: a/b"),
            good.replace("  agent: agent-7", "  agent: "),
            good.replace("scope: \"", "scope: unquoted \""),
            good.replace("kind: ban", "kind: ban\nkind: ban"),
            good.replace("kind: ban", "kind: ban\ncolour: red"),
            good.replace("  run: r-42", "run: r-42"),
            good.replace("source_commit: 0123", "source_commit: zz23"),
            good.replace("provenance:\n", "provenance:\nprovenance:\n"),
            good.replace("family: accounts", "family accounts"),
            good.replace("pattern: ", "pattern: unquoted "),
            good.replace("kind: ban", "kind: lesson"),
            good.replace("pattern: \"passwd\\\\s+-d \\\"x\\\"\"\n", ""),
        ];
        for (i, c) in cases.iter().enumerate() {
            assert!(
                matches!(
                    LessonFile::parse(c),
                    Err(KnowledgeError::Malformed(_) | KnowledgeError::InvalidComponent { .. })
                ),
                "case {i} parsed: {c:?}"
            );
        }
    }

    #[test]
    fn hostile_path_components_are_rejected() {
        assert!(lesson_path("..", "x").is_err());
        assert!(lesson_path("a", "../../etc/passwd").is_err());
        assert!(skill_path("a/b").is_err());
        assert!(skill_path("").is_err());
        assert_eq!(skill_path("rule_1.x").unwrap(), "skills/rule_1.x.sh");
    }

    #[test]
    fn ranking_defaults_to_version_one_and_round_trips() {
        let r = Ranking::default();
        assert_eq!(r.version, 1);
        assert_eq!(Ranking::from_json(&r.to_json()).unwrap(), r);
        // A field from a newer coordinator is ignored; a newer format is not.
        let newer = Ranking::from_json(br#"{"version":1,"extra":2,"priors":{"f":0.3}}"#).unwrap();
        assert_eq!(newer.priors.get("f"), Some(&0.3));
        let err = Ranking::from_json(br#"{"version":2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("upgrade the agent"), "{err}");
    }

    #[test]
    fn a_ranking_without_a_pack_prior_still_parses_and_one_with_it_round_trips() {
        // As published before the pack prior existed.
        let old =
            br#"{"version":1,"lessons":[{"family":"f","id":"a","score":0.7}],"priors":{"f":0.4}}"#;
        let r = Ranking::from_json(old).unwrap();
        assert_eq!((r.pack_prior, r.priors["f"]), (None, 0.4));
        assert!(!String::from_utf8(r.to_json())
            .unwrap()
            .contains("pack_prior"));
        let with = Ranking {
            pack_prior: Some(0.125),
            ..r
        };
        assert_eq!(Ranking::from_json(&with.to_json()).unwrap(), with);
    }
}
