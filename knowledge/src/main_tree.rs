//! The coordinator's view of `main` (K4) for the dream stage and the
//! bundle: what lessons and skills it holds, which commit last wrote a
//! file (and its trailers), and one function that applies a set of file
//! changes as one fast-forward commit (K1, through `update_main`).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use git2::{Oid, Repository, Tree};

use crate::layout::{LessonFile, Ranking, RANKING_PATH};
use crate::main_ref::{tree_with_file, update_main, MAIN_REF};
use crate::trailers::DreamTrailers;
use crate::KnowledgeError;

/// One file change: `Some(bytes)` writes, `None` deletes.
pub type FileChange<'a> = (&'a str, Option<&'a [u8]>);

/// Lesson files that parsed, and the paths of those that did not with why.
pub type LessonsOnMain = (Vec<LessonFile>, Vec<(String, KnowledgeError)>);

/// One commit on `main`'s first-parent line that changed a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// The commit, as hex.
    pub commit: String,
    /// The blob the commit left at the path (hex); `None` when it deleted it.
    pub blob: Option<String>,
    /// The commit message's dream trailers.
    pub trailers: DreamTrailers,
}

/// A snapshot of `main`.
pub struct MainTree {
    repo: Repository,
    commit: Option<Oid>,
}

impl MainTree {
    /// Opens the bare repo at `dir` at its current `main`.
    pub fn open(dir: &Path) -> Result<MainTree, KnowledgeError> {
        let repo = Repository::open_bare(dir)?;
        let commit = match repo.refname_to_id(MAIN_REF) {
            Ok(oid) => Some(oid),
            Err(e) if e.code() == git2::ErrorCode::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(MainTree { repo, commit })
    }

    /// The commit this snapshot is of, as hex.
    pub fn commit(&self) -> Option<String> {
        self.commit.map(|c| c.to_string())
    }

    fn tree(&self) -> Result<Option<Tree<'_>>, KnowledgeError> {
        match self.commit {
            Some(c) => Ok(Some(self.repo.find_commit(c)?.tree()?)),
            None => Ok(None),
        }
    }

    /// The file at `path`, if any.
    pub fn file(&self, path: &str) -> Result<Option<Vec<u8>>, KnowledgeError> {
        let Some(tree) = self.tree()? else {
            return Ok(None);
        };
        file_in(&self.repo, &tree, path)
    }

    /// The file at `path` as of `commit` (hex), if any.
    pub fn file_at(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, KnowledgeError> {
        let oid = Oid::from_str(commit)?;
        let tree = self.repo.find_commit(oid)?.tree()?;
        file_in(&self.repo, &tree, path)
    }

    /// The published ranking (the default when there is none).
    pub fn ranking(&self) -> Result<Ranking, KnowledgeError> {
        match self.file(RANKING_PATH)? {
            Some(bytes) => Ranking::from_json(&bytes),
            None => Ok(Ranking::default()),
        }
    }

    /// Every lesson file under `lessons/`; unparseable ones are returned as
    /// their path with the error, so the caller can count them.
    pub fn lessons(&self) -> Result<LessonsOnMain, KnowledgeError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let Some(tree) = self.tree()? else {
            return Ok((good, bad));
        };
        let Some(dir) = subtree(&self.repo, &tree, "lessons")? else {
            return Ok((good, bad));
        };
        for family in dir.iter() {
            let Some(fam_tree) = family.to_object(&self.repo)?.into_tree().ok() else {
                continue;
            };
            for entry in fam_tree.iter() {
                let name = entry.name().unwrap_or_default();
                if !name.ends_with(".md") {
                    continue;
                }
                let path = format!("lessons/{}/{name}", family.name().unwrap_or_default());
                let Ok(blob) = entry.to_object(&self.repo)?.into_blob() else {
                    continue;
                };
                let parsed = std::str::from_utf8(blob.content())
                    .map_err(|_| KnowledgeError::Malformed("not UTF-8".into()))
                    .and_then(LessonFile::parse);
                match parsed {
                    Ok(l) => good.push(l),
                    Err(e) => bad.push((path, e)),
                }
            }
        }
        Ok((good, bad))
    }

    /// Every `skills/<rule>.sh`: (rule, script).
    pub fn skills(&self) -> Result<Vec<(String, Vec<u8>)>, KnowledgeError> {
        let Some(tree) = self.tree()? else {
            return Ok(Vec::new());
        };
        let Some(dir) = subtree(&self.repo, &tree, "skills")? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in dir.iter() {
            let Some(rule) = entry.name().and_then(|n| n.strip_suffix(".sh")) else {
                continue;
            };
            if let Ok(blob) = entry.to_object(&self.repo)?.into_blob() {
                out.push((rule.to_owned(), blob.content().to_vec()));
            }
        }
        Ok(out)
    }

    /// The git blob id (hex) of the file at `path`, if any.
    pub fn blob_id(&self, path: &str) -> Result<Option<String>, KnowledgeError> {
        let Some(tree) = self.tree()? else {
            return Ok(None);
        };
        Ok(entry_of(&tree, path, git2::ObjectType::Blob)?.map(|o| o.to_string()))
    }

    /// The newest commit of this snapshot's first-parent line that changed
    /// `path` (`main` only fast-forwards, so that line is its history).
    pub fn last_write(&self, path: &str) -> Result<Option<FileWrite>, KnowledgeError> {
        let mut last = None;
        self.walk_changes(path, git2::ObjectType::Blob, |commit, now, _| {
            last = Some(write_of(commit, now));
            Ok(ControlFlow::Break(()))
        })?;
        Ok(last)
    }

    /// Every change to the files directly under `dir`, by file name, newest
    /// first, in one walk of the first-parent line (commits that leave
    /// `dir`'s tree as it was cost one comparison of tree ids).
    pub fn writes_under(
        &self,
        dir: &str,
    ) -> Result<BTreeMap<String, Vec<FileWrite>>, KnowledgeError> {
        let mut out: BTreeMap<String, Vec<FileWrite>> = BTreeMap::new();
        self.walk_changes(dir, git2::ObjectType::Tree, |commit, now, before| {
            let now = self.blobs_of(now)?;
            let before = self.blobs_of(before)?;
            let names: std::collections::BTreeSet<&String> =
                now.keys().chain(before.keys()).collect();
            for name in names {
                let blob = now.get(name).copied();
                if blob != before.get(name).copied() {
                    out.entry(name.clone())
                        .or_default()
                        .push(write_of(commit, blob));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Calls `visit(commit, id now, id before)` for each commit of the
    /// first-parent line, newest first, that changed the entry of `kind`
    /// at `path`, until it breaks.
    fn walk_changes(
        &self,
        path: &str,
        kind: git2::ObjectType,
        mut visit: impl FnMut(
            &git2::Commit<'_>,
            Option<Oid>,
            Option<Oid>,
        ) -> Result<ControlFlow<()>, KnowledgeError>,
    ) -> Result<(), KnowledgeError> {
        let mut next = self.commit;
        while let Some(oid) = next {
            let commit = self.repo.find_commit(oid)?;
            let parent = commit.parents().next();
            let now = entry_of(&commit.tree()?, path, kind)?;
            let before = match &parent {
                Some(p) => entry_of(&p.tree()?, path, kind)?,
                None => None,
            };
            if now != before && visit(&commit, now, before)?.is_break() {
                break;
            }
            next = parent.map(|p| p.id());
        }
        Ok(())
    }

    /// The blobs directly in the tree `id`, by name.
    fn blobs_of(&self, id: Option<Oid>) -> Result<BTreeMap<String, Oid>, KnowledgeError> {
        let Some(id) = id else {
            return Ok(BTreeMap::new());
        };
        let tree = self.repo.find_tree(id)?;
        Ok(tree
            .iter()
            .filter(|e| e.kind() == Some(git2::ObjectType::Blob))
            .filter_map(|e| Some((e.name()?.to_owned(), e.id())))
            .collect())
    }

    /// The tip of `refname` (e.g. an agent's lease branch), if it exists.
    pub fn ref_tip(&self, refname: &str) -> Option<String> {
        self.repo.refname_to_id(refname).ok().map(|o| o.to_string())
    }
}

fn write_of(commit: &git2::Commit<'_>, blob: Option<Oid>) -> FileWrite {
    FileWrite {
        commit: commit.id().to_string(),
        blob: blob.map(|b| b.to_string()),
        trailers: DreamTrailers::parse(&String::from_utf8_lossy(commit.message_bytes())),
    }
}

/// The id of the entry of `kind` at `path` in `tree`, if there is one.
fn entry_of(
    tree: &Tree<'_>,
    path: &str,
    kind: git2::ObjectType,
) -> Result<Option<Oid>, KnowledgeError> {
    match tree.get_path(Path::new(path)) {
        Ok(e) => Ok((e.kind() == Some(kind)).then(|| e.id())),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn subtree<'r>(
    repo: &'r Repository,
    tree: &Tree<'_>,
    name: &str,
) -> Result<Option<Tree<'r>>, KnowledgeError> {
    match tree.get_name(name) {
        Some(e) => Ok(e.to_object(repo)?.into_tree().ok()),
        None => Ok(None),
    }
}

fn file_in(
    repo: &Repository,
    tree: &Tree<'_>,
    path: &str,
) -> Result<Option<Vec<u8>>, KnowledgeError> {
    let entry = match tree.get_path(Path::new(path)) {
        Ok(e) => e,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(entry
        .to_object(repo)?
        .into_blob()
        .ok()
        .map(|b| b.content().to_vec()))
}

/// What [`commit_changes`] did to `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The `main` the commit was built on (`after` itself when nothing
    /// changed; `None` when `main` did not exist).
    pub before: Option<Oid>,
    pub after: Oid,
}

/// Applies `changes` to `main` as one commit by compare-and-swap (K1),
/// rebuilt on a `main` that moved meanwhile. When the changes leave the
/// tree as it is, no commit is made, so applying the same changes twice is
/// harmless.
pub fn commit_changes(
    dir: &Path,
    changes: &[FileChange<'_>],
    message: &str,
) -> Result<Committed, KnowledgeError> {
    let repo = Repository::open_bare(dir)?;
    if let Ok(tip) = repo
        .find_reference(MAIN_REF)
        .and_then(|r| r.peel_to_commit())
    {
        let base = tip.tree()?;
        if apply(&repo, Some(&base), changes)? == base.id() {
            return Ok(Committed {
                before: Some(tip.id()),
                after: tip.id(),
            });
        }
    }
    // A main that moves meanwhile is rebuilt on, with the same changes.
    let after = update_main(
        &repo,
        |repo, current| {
            let base = current.map(|c| c.tree()).transpose()?;
            apply(repo, base.as_ref(), changes)
        },
        message,
    )?;
    let before = repo.find_commit(after)?.parent_ids().next();
    Ok(Committed { before, after })
}

fn apply(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    changes: &[FileChange<'_>],
) -> Result<Oid, KnowledgeError> {
    let mut tree: Option<Tree<'_>> = base.map(|t| repo.find_tree(t.id())).transpose()?;
    for (path, bytes) in changes {
        let id = match bytes {
            Some(b) => tree_with_file(repo, tree.as_ref(), path, b, path.ends_with(".sh"))?,
            None => tree_without_file(repo, tree.as_ref(), path)?,
        };
        tree = Some(repo.find_tree(id)?);
    }
    match tree {
        Some(t) => Ok(t.id()),
        None => Ok(repo.treebuilder(None)?.write()?),
    }
}

/// Copy of `base` without `path`; directories left empty are dropped.
fn tree_without_file(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    path: &str,
) -> Result<Oid, KnowledgeError> {
    let parts: Vec<&str> = path.split('/').collect();
    remove(repo, base, &parts)
}

fn remove(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    parts: &[&str],
) -> Result<Oid, KnowledgeError> {
    let mut builder = repo.treebuilder(base)?;
    match parts {
        [] => return Err(KnowledgeError::BadRelativePath("".into())),
        [name] => {
            if builder.get(name)?.is_some() {
                builder.remove(name)?;
            }
        }
        [dir, rest @ ..] => {
            let sub = match base.and_then(|t| t.get_name(dir)) {
                Some(e) if e.kind() == Some(git2::ObjectType::Tree) => {
                    Some(repo.find_tree(e.id())?)
                }
                _ => None,
            };
            if let Some(sub) = sub {
                let id = remove(repo, Some(&sub), rest)?;
                if repo.find_tree(id)?.is_empty() {
                    builder.remove(dir)?;
                } else {
                    builder.insert(dir, id, 0o040000)?;
                }
            }
        }
    }
    Ok(builder.write()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trailers::DreamAction;

    #[test]
    fn changes_are_one_commit_and_repeating_them_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let first = commit_changes(
            dir.path(),
            &[("a/b.md", Some(b"one")), ("c.sh", Some(b"two"))],
            "add",
        )
        .unwrap();
        assert_eq!(first.before, None);
        let first = first.after;
        let again = commit_changes(dir.path(), &[("a/b.md", Some(b"one"))], "again").unwrap();
        assert_eq!(
            (again.before, again.after),
            (Some(first), first),
            "an unchanged tree makes no commit"
        );
        let second = commit_changes(dir.path(), &[("a/b.md", None)], "remove").unwrap();
        assert_eq!(second.before, Some(first));
        let second = second.after;
        let main = MainTree::open(dir.path()).unwrap();
        assert_eq!(main.commit(), Some(second.to_string()));
        assert_eq!(main.file("a/b.md").unwrap(), None);
        assert_eq!(main.file("c.sh").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(
            main.file_at(&first.to_string(), "a/b.md")
                .unwrap()
                .as_deref(),
            Some(&b"one"[..])
        );
        // The emptied directory is gone; history is a straight line.
        let repo = Repository::open_bare(dir.path()).unwrap();
        let tip = repo.find_commit(second).unwrap();
        assert!(tip.tree().unwrap().get_name("a").is_none());
        assert_eq!(tip.parent_ids().collect::<Vec<_>>(), vec![first]);
    }

    fn blob_of(bytes: &[u8]) -> String {
        Oid::hash_object(git2::ObjectType::Blob, bytes)
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_last_write_of_a_path_and_its_trailers_are_read_from_history() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let promote = DreamTrailers::new(DreamAction::Promote, 12, 345);
        let c1 = commit_changes(
            dir.path(),
            &[
                ("skills/a.sh", Some(b"one\n")),
                ("skills/b.sh", Some(b"bee\n")),
            ],
            &promote.message("promote a and b"),
        )
        .unwrap()
        .after;
        // Unrelated changes do not count as writes of the skill.
        commit_changes(dir.path(), &[("ranking.json", Some(b"{}"))], "ranking").unwrap();
        let c3 = commit_changes(dir.path(), &[("skills/a.sh", Some(b"two\n"))], "by hand")
            .unwrap()
            .after;
        let revert = DreamTrailers::new(DreamAction::Revert, 13, 400);
        let c4 = commit_changes(
            dir.path(),
            &[("skills/a.sh", Some(b"one\n")), ("skills/b.sh", None)],
            &revert.message("revert"),
        )
        .unwrap()
        .after;
        commit_changes(dir.path(), &[("lessons/f/x.md", Some(b"x"))], "lesson").unwrap();

        let main = MainTree::open(dir.path()).unwrap();
        assert_eq!(
            main.blob_id("skills/a.sh").unwrap(),
            Some(blob_of(b"one\n"))
        );
        assert_eq!(main.blob_id("skills/b.sh").unwrap(), None);
        assert_eq!(
            main.blob_id("skills").unwrap(),
            None,
            "a directory is no blob"
        );
        let last = main.last_write("skills/a.sh").unwrap().unwrap();
        assert_eq!(last.commit, c4.to_string());
        assert_eq!(last.blob, Some(blob_of(b"one\n")));
        assert_eq!(last.trailers, revert);
        assert_eq!(main.last_write("skills/none.sh").unwrap(), None);

        let writes = main.writes_under("skills").unwrap();
        assert_eq!(writes.keys().collect::<Vec<_>>(), ["a.sh", "b.sh"]);
        let a: Vec<(&str, Option<&str>)> = writes["a.sh"]
            .iter()
            .map(|w| (w.commit.as_str(), w.blob.as_deref()))
            .collect();
        let (one, two) = (blob_of(b"one\n"), blob_of(b"two\n"));
        assert_eq!(
            a,
            [
                (c4.to_string().as_str(), Some(one.as_str())),
                (c3.to_string().as_str(), Some(two.as_str())),
                (c1.to_string().as_str(), Some(one.as_str())),
            ]
        );
        assert_eq!(writes["a.sh"][1].trailers, DreamTrailers::default());
        assert_eq!(writes["a.sh"][2].trailers, promote);
        assert_eq!(writes["b.sh"][0].blob, None, "the deletion is a write");
        assert_eq!(writes["b.sh"][0].commit, c4.to_string());
        assert_eq!(writes["b.sh"][1].commit, c1.to_string());
        assert!(main.writes_under("nothing").unwrap().is_empty());
    }

    #[test]
    fn an_empty_repo_has_no_writes() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let main = MainTree::open(dir.path()).unwrap();
        assert_eq!(main.last_write("skills/a.sh").unwrap(), None);
        assert_eq!(main.blob_id("skills/a.sh").unwrap(), None);
        assert!(main.writes_under("skills").unwrap().is_empty());
    }
}
