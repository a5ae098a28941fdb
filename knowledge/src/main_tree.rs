//! The coordinator's view of `main` (K4) for the dream stage: what lessons
//! and skills it holds, and one function that applies a set of file
//! changes as one fast-forward commit (K1, through `update_main`).

use std::path::Path;

use git2::{Oid, Repository, Tree};

use crate::layout::{LessonFile, Ranking, RANKING_PATH};
use crate::main_ref::{tree_with_file, update_main, MAIN_REF};
use crate::KnowledgeError;

/// One file change: `Some(bytes)` writes, `None` deletes.
pub type FileChange<'a> = (&'a str, Option<&'a [u8]>);

/// Lesson files that parsed, and the paths of those that did not with why.
pub type LessonsOnMain = (Vec<LessonFile>, Vec<(String, KnowledgeError)>);

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

    /// The tip of `refname` (e.g. an agent's lease branch), if it exists.
    pub fn ref_tip(&self, refname: &str) -> Option<String> {
        self.repo.refname_to_id(refname).ok().map(|o| o.to_string())
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
}
