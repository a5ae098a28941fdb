//! K1/K2: the coordinator's bare knowledge repo — first commit, config, push hook.

use std::io::Write;
use std::path::Path;

use git2::{Oid, Repository, RepositoryInitOptions};

use crate::layout::{Ranking, RANKING_PATH};
use crate::main_ref::{coordinator_signature, MAIN_REF};
use crate::KnowledgeError;

/// Refuses every pushed ref outside `refs/heads/agent/$REMOTE_USER/`.
/// `git http-backend` passes `REMOTE_USER` (the authenticated agent id) on
/// to receive-pack and so to this hook. Agent ids are `[A-Za-z0-9._-]`, so
/// the quoted expansion in the `case` pattern matches literally.
pub const PRE_RECEIVE_HOOK: &str = r#"#!/bin/sh
# Written by fleet-knowledge (K2): agents push only their own agent/<id>/ refs.
user="$REMOTE_USER"
if [ -z "$user" ]; then
    echo "fleet: refused: no authenticated agent" >&2
    exit 1
fi
status=0
while read -r old new ref; do
    case "$ref" in
        refs/heads/agent/"$user"/?*) ;;
        *)
            echo "fleet: refused: $ref is outside refs/heads/agent/$user/" >&2
            status=1
            ;;
    esac
done
exit $status
"#;

/// Open the bare knowledge repo at `path`, creating it first if needed with
/// one commit on `main` holding every skill pack under `packs/<name>/` and
/// an empty `ranking.json`. An existing `main` is never touched. The
/// receive config and the pre-receive hook are (re)written every time.
pub fn init_bare(path: &Path, skill_packs_dir: &Path) -> Result<Repository, KnowledgeError> {
    let repo = match Repository::open_bare(path) {
        Ok(r) => r,
        Err(_) => {
            let mut opts = RepositoryInitOptions::new();
            opts.bare(true).initial_head("main").mkpath(true);
            Repository::init_opts(path, &opts)?
        }
    };
    let mut cfg = repo.config()?;
    cfg.set_bool("receive.denyNonFastForwards", true)?;
    cfg.set_bool("receive.denyDeletes", true)?;
    cfg.set_bool("http.receivepack", true)?;
    cfg.set_bool("uploadpack.allowAnySHA1InWant", false)?;
    install_hook(repo.path())?;

    if repo.find_reference(MAIN_REF).is_err() {
        let tree = initial_tree(&repo, skill_packs_dir)?;
        let sig = coordinator_signature()?;
        let tree = repo.find_tree(tree)?;
        let commit = repo.commit(None, &sig, &sig, "knowledge repo: skill packs", &tree, &[])?;
        match repo.reference(MAIN_REF, commit, false, "fleet: init") {
            Ok(_) => tracing::info!(%commit, path = %path.display(), "knowledge repo created"),
            // Another coordinator created main first: theirs stands.
            Err(e) if e.code() == git2::ErrorCode::Exists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(repo)
}

fn install_hook(git_dir: &Path) -> Result<(), KnowledgeError> {
    use std::os::unix::fs::PermissionsExt;
    let hooks = git_dir.join("hooks");
    std::fs::create_dir_all(&hooks).map_err(KnowledgeError::io(&hooks))?;
    let tmp = hooks.join("pre-receive.fleet-tmp");
    let dst = hooks.join("pre-receive");
    let mut f = std::fs::File::create(&tmp).map_err(KnowledgeError::io(&tmp))?;
    f.write_all(PRE_RECEIVE_HOOK.as_bytes())
        .map_err(KnowledgeError::io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(KnowledgeError::io(&tmp))?;
    f.sync_all().map_err(KnowledgeError::io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &dst).map_err(KnowledgeError::io(&dst))
}

fn initial_tree(repo: &Repository, packs_dir: &Path) -> Result<Oid, KnowledgeError> {
    let mut root = repo.treebuilder(None)?;
    root.insert(
        RANKING_PATH,
        repo.blob(&Ranking::default().to_json())?,
        0o100644,
    )?;
    if packs_dir.is_dir() {
        let packs = dir_tree(repo, packs_dir)?;
        if let Some(packs) = packs {
            root.insert("packs", packs, 0o040000)?;
        }
    }
    Ok(root.write()?)
}

/// The tree of a directory (regular files and subdirectories; symlinks and
/// anything else skipped), or None when it holds no file.
fn dir_tree(repo: &Repository, dir: &Path) -> Result<Option<Oid>, KnowledgeError> {
    use std::os::unix::fs::PermissionsExt;
    let mut builder = repo.treebuilder(None)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(KnowledgeError::io(dir))?
        .collect::<Result<_, _>>()
        .map_err(KnowledgeError::io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name == ".git" {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(KnowledgeError::io(&path))?;
        if meta.is_dir() {
            if let Some(sub) = dir_tree(repo, &path)? {
                builder.insert(&name, sub, 0o040000)?;
            }
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).map_err(KnowledgeError::io(&path))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o100755
            } else {
                0o100644
            };
            builder.insert(&name, repo.blob(&bytes)?, mode)?;
        }
    }
    if builder.is_empty() {
        Ok(None)
    } else {
        Ok(Some(builder.write()?))
    }
}
