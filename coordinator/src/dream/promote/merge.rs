//! A near-duplicate lesson or ban merging into the one on `main` (DESIGN
//! D7). The gates decided on the merged text ([`gates::merge_text`]);
//! APPLY rewrites the accepted file as one fast-forward commit — same id
//! and path, the merged text, and the candidate (id, run, lease) added to
//! its provenance's `merged` list. The ledger entry is action `merge` with
//! `merged_into` the accepted lesson and `path` its file, so a D8 revert
//! puts the file back as it was before the merge. Any other verdict leaves
//! `main` alone.

use std::collections::BTreeMap;
use std::path::Path;

use fleet_common::api::LedgerLine;
use fleet_knowledge::{DreamAction, DreamTrailers, LessonFile, MainTree, MergedFrom};
use sqlx::PgConnection;

use super::super::gates::{self, Decision, Existing, Verdict};
use super::super::git;
use super::{defer, kind_str, record, set_commits, set_status, Pending};
use crate::CoordinatorError;

/// The ledger action of a merge.
pub(super) const ACTION: &str = "merge";
/// A merged candidate's status: its text lives on in another lesson.
pub(super) const STATUS: &str = "merged";

/// The lesson and ban files a merge can go into, by id: `main`'s, and
/// those APPLIED earlier in this pass.
pub(super) struct LessonFiles(BTreeMap<String, LessonFile>);

impl LessonFiles {
    pub fn on_main(main: &MainTree) -> Result<Self, CoordinatorError> {
        let (lessons, _bad) = main.lessons().map_err(git::error)?;
        Ok(Self(
            lessons.into_iter().map(|l| (l.id.clone(), l)).collect(),
        ))
    }

    /// A file APPLY wrote (skills are not lesson files and are skipped).
    pub fn applied(&mut self, path: &str, bytes: &[u8]) {
        if !path.starts_with("lessons/") {
            return;
        }
        if let Ok(l) = LessonFile::parse(&String::from_utf8_lossy(bytes)) {
            self.0.insert(l.id.clone(), l);
        }
    }
}

/// A decided merge: the file it would write.
pub(super) struct Merge {
    into: String,
    file: LessonFile,
}

impl LessonFiles {
    /// The file `d` (a merge) would write: the target with the merged text
    /// and the candidate in its provenance.
    pub fn merge(
        &self,
        p: &Pending,
        d: &Decision,
        main: &MainTree,
    ) -> Result<Merge, CoordinatorError> {
        let c = &p.candidate;
        let (Some(into), Some(merged)) = (d.merged_into.as_deref(), d.merge.as_ref()) else {
            return Err(CoordinatorError::WorkerFailed(format!(
                "merge of {} without a target",
                c.id
            )));
        };
        let target = self.0.get(into).ok_or_else(|| {
            CoordinatorError::Conflict(format!("{} merges into {into}, which is not on main", c.id))
        })?;
        Ok(Merge {
            into: into.to_owned(),
            file: merged_file(target, p, &merged.text, main)?,
        })
    }
}

/// One pass's context for merging.
pub(super) struct Merging<'a> {
    pub run: i64,
    pub dir: &'a Path,
    pub dry_run: bool,
}

impl Merging<'_> {
    /// Records the merge in the ledger and, on APPLY, rewrites the file.
    pub async fn apply(
        &self,
        db: &mut PgConnection,
        p: &Pending,
        d: &Decision,
        m: Merge,
        files: &mut LessonFiles,
        existing: &mut [Existing],
    ) -> Result<LedgerLine, CoordinatorError> {
        let (run, c) = (self.run, &p.candidate);
        let Merge { into, file } = m;
        let into = into.as_str();
        let (added, left_out) = d
            .merge
            .as_ref()
            .map_or((0, 0), |m| (m.added.len(), m.left_out));
        let path = file.path().map_err(git::error)?;
        let id = record(db, run, p, d, &path, ACTION).await?;
        let mut commit = None;
        match d.verdict {
            Verdict::Apply => {
                if !self.dry_run {
                    let message =
                        DreamTrailers::new(DreamAction::Merge, run, id).message(&format!(
                            "dream: merge {} {} into {into} (ledger #{id}, run {run})",
                            kind_str(c.kind),
                            c.id
                        ));
                    let bytes = file.render().into_bytes();
                    let (before, after) = git::write(self.dir, path, Some(bytes), message).await?;
                    set_commits(db, id, before.as_deref(), &after).await?;
                    commit = Some(after);
                }
                if let Some(e) = existing.iter_mut().find(|e| e.id == into) {
                    e.text = file.body.clone();
                }
                files.0.insert(into.to_owned(), file);
                set_status(db, &c.id, STATUS).await?;
            }
            Verdict::Reject => set_status(db, &c.id, "rejected").await?,
            Verdict::Escalate => set_status(db, &c.id, "escalated").await?,
            Verdict::Defer => defer(db, &c.id).await?,
        }
        tracing::info!(
            run,
            lesson = c.id,
            into,
            verdict = d.verdict.as_str(),
            added,
            left_out,
            "near-duplicate merge decided"
        );
        Ok(LedgerLine {
            id: (!self.dry_run).then_some(id),
            lesson: c.id.clone(),
            kind: kind_str(c.kind).to_owned(),
            action: ACTION.into(),
            verdict: d.verdict.as_str().to_owned(),
            reason: d.reason.clone(),
            commit,
        })
    }
}

/// `target` with `text` as its body and the candidate in its provenance.
fn merged_file(
    target: &LessonFile,
    p: &Pending,
    text: &str,
    main: &MainTree,
) -> Result<LessonFile, CoordinatorError> {
    let c = &p.candidate;
    let prov = c.provenance.as_ref();
    let from = MergedFrom {
        id: c.id.clone(),
        run: prov.map_or_else(|| "unknown".into(), |p| p.run.to_string()),
        agent: prov.map_or_else(|| "unknown".into(), |p| p.agent.clone()),
        epoch: prov.map_or(0, |p| p.epoch),
        attempt: prov.map_or(0, |p| u32::try_from(p.attempt).unwrap_or(0)),
        source_commit: p.branch.as_deref().and_then(|b| main.ref_tip(b)),
    };
    let mut file = target.clone();
    file.body = format!("{}\n", text.trim_end());
    // Merging the same candidate twice (a redone pass) lists it once.
    if !file.provenance.merged.iter().any(|m| m.id == from.id) {
        file.provenance.merged.push(from);
    }
    file.validate().map_err(git::error)?;
    Ok(file)
}

/// An operator approved an escalated merge: the file at `path` as `main`
/// has it now, with the candidate merged in.
pub(super) fn approved_file(
    main: &MainTree,
    p: &Pending,
    path: &str,
) -> Result<Vec<u8>, CoordinatorError> {
    let bytes = main.file(path).map_err(git::error)?.ok_or_else(|| {
        CoordinatorError::Conflict(format!(
            "{path}, which the merge goes into, is no longer on main"
        ))
    })?;
    let target = LessonFile::parse(&String::from_utf8_lossy(&bytes)).map_err(git::error)?;
    let merged = gates::merge_text(&target.body, &p.candidate.text);
    Ok(merged_file(&target, p, &merged.text, main)?
        .render()
        .into_bytes())
}
