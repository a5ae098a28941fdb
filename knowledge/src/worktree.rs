//! K3: the agent's side — a local cache of the knowledge repo and one git
//! worktree per lease.
//!
//! Cache layout (`cache_dir` is given by the caller, one per agent id):
//!
//! ```text
//! <cache>/lock                 cross-process flock (see `lock.rs`)
//! <cache>/repo/.git            a normal, non-bare repo whose own working
//!                              directory stays empty (HEAD is unborn);
//!                              `refs/remotes/origin/main` is the fetched main
//! <cache>/repo/.git/worktrees/<name>   libgit2's admin entry per worktree
//! <cache>/leases/<name>/       the checked-out worktree of one lease
//! ```
//!
//! Why a non-bare repo with an empty working directory rather than a bare
//! cache: libgit2 and the git CLI both treat "worktrees of a normal repo" as
//! the common case (`git worktree list` then shows the main one plus ours),
//! and nothing is ever checked out in the main directory, so it costs
//! nothing. Worktree names are `<agent>+<run>+<rule>+e<epoch>`: `+` cannot
//! occur in a component, so a prefix `<agent>+` identifies exactly this
//! agent's worktrees even when agents share a cache.
//!
//! Remotes are anonymous (URL + explicit refspecs), so no operation writes
//! the repo's config, which concurrent processes would contend for.

use std::path::{Component, Path, PathBuf};

use git2::{
    Cred, CredentialType, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository,
    WorktreeAddOptions, WorktreePruneOptions,
};

use crate::component::validate_component;
use crate::lock::CacheLock;
use crate::KnowledgeError;

/// Where the fetched `main` lands in the cache.
pub const FETCHED_MAIN: &str = "refs/remotes/origin/main";

/// HTTP basic credentials of an agent: user = agent id, password = token.
#[derive(Clone)]
pub struct AgentCredentials {
    pub agent_id: String,
    pub token: String,
}

impl std::fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCredentials")
            .field("agent_id", &self.agent_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Callbacks answering libgit2's auth challenge once; a second challenge
/// means the password was refused, and retrying forever would hang.
fn callbacks(creds: &AgentCredentials) -> RemoteCallbacks<'_> {
    let mut cb = RemoteCallbacks::new();
    let mut asked = 0;
    cb.credentials(move |_url, _user, allowed| {
        asked += 1;
        if asked > 1 || !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(git2::Error::from_str(
                "credentials refused by the knowledge repo",
            ));
        }
        Cred::userpass_plaintext(&creds.agent_id, &creds.token)
    });
    cb
}

/// A skill as the fetched `main` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedSkill {
    /// The file's bytes, as committed.
    pub script: Vec<u8>,
    /// Its git blob id (hex).
    pub blob: String,
    /// The `main` commit it was read from (hex).
    pub commit: String,
}

/// An agent's local cache of the knowledge repo.
pub struct AgentCheckout {
    cache_dir: PathBuf,
    repo: Repository,
    remote_url: String,
    creds: AgentCredentials,
}

impl AgentCheckout {
    /// Open the cache at `cache_dir`, creating it if needed. Nothing is
    /// fetched yet: call [`AgentCheckout::fetch_main`].
    pub fn open_or_clone(
        cache_dir: &Path,
        remote_url: &str,
        credentials: AgentCredentials,
    ) -> Result<AgentCheckout, KnowledgeError> {
        validate_component("agent", &credentials.agent_id)?;
        std::fs::create_dir_all(cache_dir.join("leases")).map_err(KnowledgeError::io(cache_dir))?;
        let cache_dir = cache_dir
            .canonicalize()
            .map_err(KnowledgeError::io(cache_dir))?;
        let repo_dir = cache_dir.join("repo");
        let repo = {
            let _lock = CacheLock::acquire(&cache_dir)?;
            match Repository::open(&repo_dir) {
                Ok(r) => r,
                Err(_) => {
                    if repo_dir.exists() {
                        tracing::warn!(path = %repo_dir.display(), "cache repo unreadable, recreating");
                        std::fs::remove_dir_all(&repo_dir)
                            .map_err(KnowledgeError::io(&repo_dir))?;
                    }
                    let mut opts = git2::RepositoryInitOptions::new();
                    opts.initial_head("fleet-cache-unborn");
                    Repository::init_opts(&repo_dir, &opts)?
                }
            }
        };
        Ok(AgentCheckout {
            cache_dir,
            repo,
            remote_url: remote_url.to_string(),
            creds: credentials,
        })
    }

    pub fn agent_id(&self) -> &str {
        &self.creds.agent_id
    }

    /// Fetch the remote `main` into [`FETCHED_MAIN`]; returns its commit.
    pub fn fetch_main(&self) -> Result<Oid, KnowledgeError> {
        // Under the lock: concurrent fetches into one cache would race on the ref lock.
        let _lock = CacheLock::acquire(&self.cache_dir)?;
        let mut remote = self.repo.remote_anonymous(&self.remote_url)?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks(&self.creds));
        let refspec = format!("+refs/heads/main:{FETCHED_MAIN}");
        remote.fetch(&[refspec.as_str()], Some(&mut opts), None)?;
        let oid = self.repo.refname_to_id(FETCHED_MAIN)?;
        tracing::debug!(%oid, "fetched main");
        Ok(oid)
    }

    /// Create the worktree of one lease on branch
    /// `agent/<agent>/<run>/<rule>-e<epoch>`, starting at the fetched main,
    /// with no upstream.
    pub fn start_lease(
        &self,
        run: &str,
        rule: &str,
        epoch: u64,
    ) -> Result<LeaseWorktree, KnowledgeError> {
        validate_component("run", run)?;
        validate_component("rule", rule)?;
        let agent = self.agent_id();
        let branch = format!("agent/{agent}/{run}/{rule}-e{epoch}");
        let name = format!("{agent}+{run}+{rule}+e{epoch}");
        let path = self.cache_dir.join("leases").join(&name);
        {
            let _lock = CacheLock::acquire(&self.cache_dir)?;
            let tip = self.repo.find_reference(FETCHED_MAIN)?.peel_to_commit()?;
            // `Repository::branch` never sets an upstream.
            let branch_ref = self.repo.branch(&branch, &tip, false)?.into_reference();
            let mut opts = WorktreeAddOptions::new();
            opts.reference(Some(&branch_ref));
            if let Err(e) = self.repo.worktree(&name, &path, Some(&opts)) {
                // Leave nothing behind that the next lease would trip over.
                let _ = self
                    .repo
                    .find_reference(&format!("refs/heads/{branch}"))
                    .and_then(|mut r| r.delete());
                return Err(e.into());
            }
        }
        let repo = Repository::open(&path)?;
        tracing::debug!(branch, "lease worktree added");
        Ok(LeaseWorktree {
            cache_dir: self.cache_dir.clone(),
            main_git_dir: self.repo.path().to_path_buf(),
            name,
            branch,
            path,
            repo: Some(repo),
            remote_url: self.remote_url.clone(),
            creds: self.creds.clone(),
        })
    }

    /// Remove every worktree (and its local branch) a previous incarnation
    /// of this agent left behind, one at a time under the lock. Returns how
    /// many worktrees were removed. Call before taking leases.
    pub fn cleanup_leftovers(&self) -> Result<usize, KnowledgeError> {
        {
            // First, so that no stale `<ref>.lock` blocks deleting a branch below.
            let _lock = CacheLock::acquire(&self.cache_dir)?;
            self.remove_stale_ref_locks()?;
        }
        let prefix = format!("{}+", self.agent_id());
        let mut names: Vec<String> = Vec::new();
        for dir in [
            self.repo.path().join("worktrees"),
            self.cache_dir.join("leases"),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    if n.starts_with(&prefix) && !names.iter().any(|x| x == n) {
                        names.push(n.to_string());
                    }
                }
            }
        }
        for name in &names {
            let _lock = CacheLock::acquire(&self.cache_dir)?;
            remove_worktree(&self.repo, &self.cache_dir.join("leases").join(name), name)?;
            tracing::info!(worktree = %name, "removed a leftover worktree");
        }
        // Branches of leases whose worktree is gone (crash after add, before remove).
        let _lock = CacheLock::acquire(&self.cache_dir)?;
        let glob = format!("refs/heads/agent/{}/*", self.agent_id());
        let refs: Vec<String> = self
            .repo
            .references_glob(&glob)?
            .filter_map(|r| r.ok().and_then(|r| r.name().map(str::to_owned)))
            .collect();
        for r in refs {
            self.repo.find_reference(&r)?.delete()?;
        }
        Ok(names.len())
    }

    /// Git lock files a killed incarnation may have left: those of this
    /// agent's own branches (only it writes them) and of the refs that are
    /// written only under the cache lock, which we hold, so no live process
    /// can own them.
    fn remove_stale_ref_locks(&self) -> Result<(), KnowledgeError> {
        let git_dir = self.repo.path();
        let mut stale = vec![
            git_dir.join("packed-refs.lock"),
            git_dir.join(format!("{FETCHED_MAIN}.lock")),
        ];
        let mut dirs = vec![git_dir.join("refs/heads/agent").join(self.agent_id())];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "lock") {
                    stale.push(p);
                }
            }
        }
        for p in stale {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!(path = %p.display(), "removed a stale git lock file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(KnowledgeError::Io { path: p, source: e }),
            }
        }
        Ok(())
    }

    /// A file of the fetched `main` (None if absent), read without a worktree.
    pub fn fetched_file(&self, path: &str) -> Result<Option<Vec<u8>>, KnowledgeError> {
        let tree = self.repo.find_reference(FETCHED_MAIN)?.peel_to_tree()?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Ok(blob) = entry.to_object(&self.repo)?.into_blob() else {
            return Ok(None);
        };
        Ok(Some(blob.content().to_vec()))
    }

    /// `skills/<rule>.sh` on the fetched `main` with its blob id and the
    /// commit it was read from (DESIGN H1); `None` when there is none.
    pub fn fetched_skill(&self, rule: &str) -> Result<Option<FetchedSkill>, KnowledgeError> {
        let path = crate::layout::skill_path(rule)?;
        let commit = self.repo.find_reference(FETCHED_MAIN)?.peel_to_commit()?;
        let entry = match commit.tree()?.get_path(Path::new(&path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Ok(blob) = entry.to_object(&self.repo)?.into_blob() else {
            return Ok(None);
        };
        Ok(Some(FetchedSkill {
            script: blob.content().to_vec(),
            blob: blob.id().to_string(),
            commit: commit.id().to_string(),
        }))
    }

    /// The ranking published on the fetched `main` (K4: agents rank lessons
    /// without database access); the default when none is published.
    pub fn ranking(&self) -> Result<crate::Ranking, KnowledgeError> {
        match self.fetched_file(crate::layout::RANKING_PATH)? {
            Some(bytes) => crate::Ranking::from_json(&bytes),
            None => Ok(crate::Ranking::default()),
        }
    }

    /// The lessons and bans of `family` on the fetched `main`
    /// (`lessons/<family>/*.md`), in file-name order. A file that does not
    /// parse is skipped with a warning: one bad file must not hide the rest.
    pub fn fetched_lessons(&self, family: &str) -> Result<Vec<crate::LessonFile>, KnowledgeError> {
        crate::validate_component("family", family)?;
        let tree = self.repo.find_reference(FETCHED_MAIN)?.peel_to_tree()?;
        let dir = match tree.get_path(Path::new("lessons").join(family).as_path()) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let Ok(dir) = dir.to_object(&self.repo)?.into_tree() else {
            return Ok(Vec::new());
        };
        let mut lessons = Vec::new();
        for entry in dir.iter() {
            let name = entry.name().unwrap_or_default().to_owned();
            if !name.ends_with(".md") {
                continue;
            }
            let Ok(blob) = entry.to_object(&self.repo)?.into_blob() else {
                continue;
            };
            let parsed = std::str::from_utf8(blob.content())
                .map_err(|_| KnowledgeError::Malformed("not UTF-8".into()))
                .and_then(crate::LessonFile::parse);
            match parsed {
                Ok(l) if l.family == family => lessons.push(l),
                Ok(l) => tracing::warn!(
                    family,
                    file = name,
                    other = l.family,
                    "lesson filed under another family; skipped"
                ),
                Err(e) => {
                    tracing::warn!(family, file = name, error = %e, "malformed lesson on main; skipped")
                }
            }
        }
        Ok(lessons)
    }

    /// Names of the worktrees currently registered in the cache.
    pub fn worktree_names(&self) -> Result<Vec<String>, KnowledgeError> {
        Ok(self
            .repo
            .worktrees()?
            .iter()
            .flatten()
            .map(str::to_owned)
            .collect())
    }
}

/// Prune one worktree (its directory and its admin entry) and delete its
/// branch. Only this worktree: never a repository-wide prune. Caller holds the lock.
fn remove_worktree(repo: &Repository, path: &Path, name: &str) -> Result<(), KnowledgeError> {
    let mut branch = None;
    match repo.find_worktree(name) {
        Ok(wt) => {
            if let Ok(r) = Repository::open_from_worktree(&wt) {
                branch = r.head().ok().and_then(|h| h.name().map(str::to_owned));
            }
            let mut opts = WorktreePruneOptions::new();
            opts.valid(true).locked(true).working_tree(true);
            wt.prune(Some(&mut opts))?;
        }
        Err(e) => tracing::debug!(worktree = name, error = %e, "no readable admin entry"),
    }
    // Whatever a crash mid-add left that prune did not know about.
    let admin = repo.path().join("worktrees").join(name);
    for dir in [admin.as_path(), path] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(KnowledgeError::io(dir))?;
        }
    }
    if let Some(b) = branch.filter(|b| b.starts_with("refs/heads/agent/")) {
        if let Ok(mut r) = repo.find_reference(&b) {
            r.delete()?;
        }
    }
    Ok(())
}

/// The worktree of one lease. Call [`LeaseWorktree::remove`] when done; a
/// dropped one stays on disk until [`AgentCheckout::cleanup_leftovers`].
pub struct LeaseWorktree {
    cache_dir: PathBuf,
    main_git_dir: PathBuf,
    name: String,
    branch: String,
    path: PathBuf,
    repo: Option<Repository>,
    remote_url: String,
    creds: AgentCredentials,
}

impl LeaseWorktree {
    /// `agent/<agent>/<run>/<rule>-e<epoch>`.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn repo(&self) -> &Repository {
        self.repo.as_ref().expect("open until removed")
    }

    /// Write a file at `rel_path` (relative, no `..`, no `.git` component).
    pub fn write(&self, rel_path: &str, bytes: &[u8]) -> Result<(), KnowledgeError> {
        let rel = Path::new(rel_path);
        let ok = !rel_path.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(n) if !n.eq_ignore_ascii_case(".git")));
        if !ok {
            return Err(KnowledgeError::BadRelativePath(rel.to_path_buf()));
        }
        let full = self.path.join(rel);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(KnowledgeError::io(parent))?;
        }
        std::fs::write(&full, bytes).map_err(KnowledgeError::io(&full))
    }

    /// Commit everything in the worktree on the lease branch.
    pub fn commit(&self, message: &str) -> Result<Oid, KnowledgeError> {
        let repo = self.repo();
        let mut index = repo.index()?;
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
        index.write()?;
        let tree = repo.find_tree(index.write_tree()?)?;
        let parent = repo.head()?.peel_to_commit()?;
        let email = format!("{}@agents.fleet.invalid", self.creds.agent_id);
        let sig = git2::Signature::now(&self.creds.agent_id, &email)?;
        let oid = repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent])?;
        Ok(oid)
    }

    /// Push this lease's branch (and only it) to the knowledge repo.
    pub fn push(&self) -> Result<(), KnowledgeError> {
        let refname = format!("refs/heads/{}", self.branch);
        push_refspec(
            self.repo(),
            &self.remote_url,
            &self.creds,
            &format!("{refname}:{refname}"),
        )
    }

    /// Remove this worktree (directory, admin entry, local branch) under the lock.
    pub fn remove(mut self) -> Result<(), KnowledgeError> {
        self.repo = None; // close our handles first
        let _lock = CacheLock::acquire(&self.cache_dir)?;
        let main = Repository::open(&self.main_git_dir)?;
        remove_worktree(&main, &self.path, &self.name)?;
        tracing::debug!(branch = %self.branch, "lease worktree removed");
        Ok(())
    }
}

/// Push one refspec with the agent's credentials; a ref the remote refuses
/// (hook, non-fast-forward) is an error.
pub fn push_refspec(
    repo: &Repository,
    remote_url: &str,
    creds: &AgentCredentials,
    refspec: &str,
) -> Result<(), KnowledgeError> {
    let mut remote = repo.remote_anonymous(remote_url)?;
    let refused = std::cell::RefCell::new(Vec::<(String, String)>::new());
    {
        let mut cb = callbacks(creds);
        cb.push_update_reference(|name, status| {
            if let Some(reason) = status {
                refused
                    .borrow_mut()
                    .push((name.to_string(), reason.to_string()));
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        remote.push(&[refspec], Some(&mut opts))?;
    }
    if let Some((refname, reason)) = refused.into_inner().into_iter().next() {
        return Err(KnowledgeError::PushRefused { refname, reason });
    }
    Ok(())
}
