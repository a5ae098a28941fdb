//! Promotion (DESIGN D7): every candidate of a run — the Reflector's
//! lessons and bans, and each fixed rule's passing script as a skill — goes
//! through the gate stack (`gates.rs`); the verdict and every gate's result
//! go to the ledger (`promotions`). APPLY writes the file onto `main` as one
//! fast-forward commit naming the ledger entry; ESCALATE waits for an
//! operator (`promotions approve|reject`); DEFER is looked at again after
//! the next run. A near-duplicate lesson or ban merges into the one on
//! `main` instead (`merge.rs`, ledger action `merge`).

mod merge;

use std::path::Path;

use fleet_common::api::LedgerLine;
use fleet_knowledge::{
    layout, DreamAction, DreamTrailers, LessonFile, LessonKind, MainTree, Provenance,
};
use sqlx::types::Json;
use sqlx::PgConnection;

use tokio::time::Instant;

use super::budget::{strongest_first, PassBudget};
use super::gates::{self, Candidate, CandidateKind, Decision, Escalation, Existing, Verdict};
use super::git;
use crate::CoordinatorError;

/// A candidate with what it takes to write it onto `main`.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub candidate: Candidate,
    pub scope: String,
    /// The lease branch it came from, for the file's provenance.
    pub branch: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    kind: String,
    family: String,
    rule_id: Option<String>,
    body: String,
    pattern: Option<String>,
    scope: String,
    deferrals: i32,
    run_id: Option<i64>,
    agent: Option<String>,
    epoch: Option<i64>,
    attempt: Option<i32>,
    accepted: Option<bool>,
    evidence: bool,
    refuted_skill: Option<String>,
}

fn kind_of(s: &str) -> CandidateKind {
    match s {
        "ban" => CandidateKind::Ban,
        "skill" => CandidateKind::Skill,
        _ => CandidateKind::Lesson,
    }
}

fn kind_str(k: CandidateKind) -> &'static str {
    match k {
        CandidateKind::Lesson => "lesson",
        CandidateKind::Ban => "ban",
        CandidateKind::Skill => "skill",
    }
}

/// Each fixed rule of `run` whose outcome an agent got accepted becomes a
/// skill candidate: the script of its fixing attempt. A fix by replaying
/// the skill already on `main` (DESIGN H1) proposes nothing new.
pub(super) async fn register_skills(db: &mut PgConnection, run: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO lessons (id, family, kind, scope, body, provenance, created_run_id,
                              work_item_id, epoch, attempt, rule_id)
         SELECT w.rule_id || '-r' || w.run_id || '-e' || w.accepted_epoch || '-a' || w.fixed_attempt || '-skill',
                w.family, 'skill', 'rule:' || w.rule_id, a.script,
                jsonb_build_object('run', w.run_id, 'rule', w.rule_id, 'epoch', w.accepted_epoch,
                                   'attempt', w.fixed_attempt, 'agent', w.accepted_agent),
                w.run_id, w.id, w.accepted_epoch, w.fixed_attempt, w.rule_id
         FROM work_items w JOIN attempts a
           ON a.work_item_id = w.id AND a.epoch = w.accepted_epoch AND a.attempt = w.fixed_attempt
         WHERE w.run_id = $1 AND w.outcome = 'fixed' AND a.script IS NOT NULL
           AND a.script_source IS DISTINCT FROM 'skill'
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(run)
    .execute(&mut *db)
    .await?;
    Ok(done.rows_affected())
}

/// This run's candidates and every deferred one, oldest first.
pub(super) async fn pending(db: &mut PgConnection, run: i64) -> Result<Vec<Pending>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT l.id, l.kind, l.family, COALESCE(l.rule_id, w.rule_id) AS rule_id, l.body, l.pattern,
                l.scope, l.deferrals, w.run_id, w.accepted_agent AS agent, l.epoch, l.attempt,
                (w.state = 'done' AND w.accepted_epoch = l.epoch) AS accepted,
                CASE WHEN l.kind = 'skill' THEN EXISTS (
                       SELECT 1 FROM attempts a WHERE a.work_item_id = l.work_item_id
                          AND a.epoch = l.epoch AND a.attempt = l.attempt
                          AND a.eval_status = 'pass' AND a.health_ok)
                     ELSE EXISTS (
                       SELECT 1 FROM attempts a WHERE a.work_item_id = l.work_item_id
                          AND a.epoch = l.epoch AND a.attempt > l.attempt
                          AND a.eval_status = 'pass' AND a.health_ok)
                END AS evidence,
                CASE WHEN l.kind = 'skill' THEN (
                       SELECT r.script FROM attempts r WHERE r.work_item_id = l.work_item_id
                          AND r.epoch = l.epoch AND r.script_source = 'skill'
                          AND NOT COALESCE(r.eval_status = 'pass' AND r.health_ok, false)
                       ORDER BY r.attempt LIMIT 1)
                END AS refuted_skill
         FROM lessons l LEFT JOIN work_items w ON w.id = l.work_item_id
         WHERE (l.status = 'candidate' AND l.created_run_id = $1) OR l.status = 'deferred'
         ORDER BY l.created_run_id, l.id",
    )
    .bind(run)
    .fetch_all(&mut *db)
    .await?;
    Ok(rows.into_iter().map(pending_of).collect())
}

fn pending_of(r: Row) -> Pending {
    let provenance = match (r.accepted, r.run_id, r.agent, r.epoch, r.attempt) {
        (Some(true), Some(run), Some(agent), Some(epoch), Some(attempt)) => {
            Some(gates::Provenance {
                run,
                agent,
                epoch,
                attempt,
            })
        }
        _ => None,
    };
    let rule = r.rule_id.unwrap_or_default();
    let branch = provenance
        .as_ref()
        .map(|p| format!("refs/heads/agent/{}/{}/{rule}-e{}", p.agent, p.run, p.epoch));
    Pending {
        candidate: Candidate {
            id: r.id,
            kind: kind_of(&r.kind),
            family: r.family,
            rule,
            text: r.body,
            pattern: r.pattern,
            provenance,
            evidence: r.evidence,
            deferrals: u32::try_from(r.deferrals).unwrap_or(0),
            refuted_skill: r.refuted_skill,
        },
        scope: r.scope,
        branch,
    }
}

/// What `main` holds, as the duplicates gate compares against.
pub(super) fn existing_on_main(main: &MainTree) -> Result<Vec<Existing>, CoordinatorError> {
    let (lessons, _bad) = main.lessons().map_err(git::error)?;
    let mut out: Vec<Existing> = lessons
        .into_iter()
        .filter_map(|l| {
            let kind = match l.kind {
                LessonKind::Lesson => CandidateKind::Lesson,
                LessonKind::Ban => CandidateKind::Ban,
                LessonKind::Skill => return None,
            };
            Some(Existing {
                id: l.id,
                kind,
                family: l.family,
                rule: l.scope.strip_prefix("rule:").map(str::to_owned),
                text: l.body,
                pattern: l.pattern,
            })
        })
        .collect();
    for (rule, script) in main.skills().map_err(git::error)? {
        out.push(Existing {
            id: format!("skill:{rule}"),
            kind: CandidateKind::Skill,
            family: String::new(),
            rule: Some(rule),
            text: String::from_utf8_lossy(&script).into_owned(),
            pattern: None,
        });
    }
    Ok(out)
}

/// The path and contents a candidate gets on `main`.
pub(super) fn file_of(p: &Pending, main: &MainTree) -> Result<(String, Vec<u8>), CoordinatorError> {
    let c = &p.candidate;
    if c.kind == CandidateKind::Skill {
        let path = layout::skill_path(&c.rule).map_err(git::error)?;
        return Ok((path, c.text.clone().into_bytes()));
    }
    let prov = c.provenance.as_ref();
    let file = LessonFile {
        id: c.id.clone(),
        kind: if c.kind == CandidateKind::Ban {
            LessonKind::Ban
        } else {
            LessonKind::Lesson
        },
        family: c.family.clone(),
        scope: p.scope.clone(),
        pattern: c.pattern.clone(),
        provenance: Provenance {
            run: prov.map_or_else(|| "unknown".into(), |p| p.run.to_string()),
            attempt: prov.map_or(0, |p| u32::try_from(p.attempt).unwrap_or(0)),
            agent: prov.map_or_else(|| "unknown".into(), |p| p.agent.clone()),
            source_commit: p.branch.as_deref().and_then(|b| main.ref_tip(b)),
            merged: Vec::new(),
        },
        body: format!("{}\n", c.text.trim_end()),
    };
    file.validate().map_err(git::error)?;
    Ok((file.path().map_err(git::error)?, file.render().into_bytes()))
}

/// Runs every pending candidate through the gates, strongest evidence
/// first, records the ledger and, unless `dry_run`, moves `main` for each
/// APPLY the pass's `budget` admits.
pub(super) async fn promote(
    db: &mut PgConnection,
    run: i64,
    dir: &Path,
    escalation: &Escalation<'_>,
    budget: &mut PassBudget,
    dry_run: bool,
) -> Result<Vec<LedgerLine>, CoordinatorError> {
    register_skills(db, run).await?;
    let mut pending = pending(db, run).await?;
    strongest_first(&mut pending);
    let main = git::open_main(dir).await?;
    let mut existing = existing_on_main(&main)?;
    let mut files = merge::LessonFiles::on_main(&main)?;
    let mut lines = Vec::new();
    for p in pending {
        let mut decision = gates::decide(&p.candidate, &existing, escalation);
        // A merge writes to `main` too: the same budget.
        budget.admit(&mut decision, Instant::now());
        if decision.merge.is_some() {
            let m = files.merge(&p, &decision, &main)?;
            let merging = merge::Merging { run, dir, dry_run };
            let line = merging
                .apply(db, &p, &decision, m, &mut files, &mut existing)
                .await?;
            lines.push(line);
            continue;
        }
        let (path, bytes) = file_of(&p, &main)?;
        let id = record(db, run, &p, &decision, &path, "promote").await?;
        let mut commit = None;
        match decision.verdict {
            Verdict::Apply => {
                if !dry_run {
                    // Trailers let the bundle name run and ledger from git alone (H2).
                    let message =
                        DreamTrailers::new(DreamAction::Promote, run, id).message(&format!(
                            "dream: promote {} {} (ledger #{id}, run {run})",
                            kind_str(p.candidate.kind),
                            p.candidate.id
                        ));
                    let (before, after) =
                        git::write(dir, path.clone(), Some(bytes.clone()), message).await?;
                    set_commits(db, id, before.as_deref(), &after).await?;
                    commit = Some(after);
                }
                files.applied(&path, &bytes);
                existing.push(Existing {
                    id: p.candidate.id.clone(),
                    kind: p.candidate.kind,
                    family: p.candidate.family.clone(),
                    rule: Some(p.candidate.rule.clone()),
                    text: p.candidate.text.clone(),
                    pattern: p.candidate.pattern.clone(),
                });
                set_status(db, &p.candidate.id, "accepted").await?;
            }
            Verdict::Reject => set_status(db, &p.candidate.id, "rejected").await?,
            Verdict::Escalate => set_status(db, &p.candidate.id, "escalated").await?,
            Verdict::Defer => defer(db, &p.candidate.id).await?,
        }
        lines.push(LedgerLine {
            id: (!dry_run).then_some(id),
            lesson: p.candidate.id.clone(),
            kind: kind_str(p.candidate.kind).to_owned(),
            action: "promote".into(),
            verdict: decision.verdict.as_str().to_owned(),
            reason: decision.reason.clone(),
            commit,
        });
    }
    Ok(lines)
}

pub(super) async fn defer(db: &mut PgConnection, lesson: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE lessons SET status = 'deferred', deferrals = deferrals + 1 WHERE id = $1")
        .bind(lesson)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// `action`: `promote`, or `merge` (then `path` is the file merged into).
async fn record(
    db: &mut PgConnection,
    run: i64,
    p: &Pending,
    d: &Decision,
    path: &str,
    action: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO promotions (run_id, lesson_id, verdict, gates, reason, kind, family, rule_id,
                                 path, merged_into, open, action)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(run)
    .bind(&p.candidate.id)
    .bind(d.verdict.as_str())
    .bind(Json(&d.gates))
    .bind(&d.reason)
    .bind(kind_str(p.candidate.kind))
    .bind(&p.candidate.family)
    .bind(&p.candidate.rule)
    .bind(path)
    .bind(&d.merged_into)
    .bind(d.verdict == Verdict::Escalate)
    .bind(action)
    .fetch_one(&mut *db)
    .await
}

pub(super) async fn set_status(
    db: &mut PgConnection,
    lesson: &str,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE lessons SET status = $2 WHERE id = $1")
        .bind(lesson)
        .bind(status)
        .execute(&mut *db)
        .await?;
    Ok(())
}

pub(super) async fn set_commits(
    db: &mut PgConnection,
    ledger: i64,
    before: Option<&str>,
    after: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE promotions SET commit_before = $2, commit_after = $3 WHERE id = $1")
        .bind(ledger)
        .bind(before)
        .bind(after)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// An operator's decision on an ESCALATE entry: approve writes the file
/// onto `main` exactly as an APPLY would; reject closes it.
pub(super) async fn decide_escalated(
    db: &mut PgConnection,
    ledger: i64,
    approve: bool,
    by: &str,
    dir: &Path,
) -> Result<LedgerLine, CoordinatorError> {
    let row: Option<(String, bool, String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT lesson_id, open, verdict, action, path, run_id FROM promotions WHERE id = $1 FOR UPDATE",
    )
    .bind(ledger)
    .fetch_optional(&mut *db)
    .await?;
    let Some((lesson, open, verdict, action, path, run)) = row else {
        return Err(CoordinatorError::NotFound);
    };
    if !open || verdict != "ESCALATE" {
        return Err(CoordinatorError::Conflict(format!(
            "ledger entry {ledger} is not an open escalation"
        )));
    }
    let mut commit = None;
    if action == crate::hosts::review::BUNDLE_EXCLUDE {
        // A skill the composition check took out of the bundle (H3):
        // approve puts it back as it is; reject removes it from `main`.
        if let (false, Some(path)) = (approve, path) {
            let message = DreamTrailers::new(DreamAction::Revert, run, ledger).message(&format!(
                "bundle: remove {lesson}, rejected by {by} (ledger #{ledger})"
            ));
            let (before, after) = git::write(dir, path, None, message).await?;
            set_commits(db, ledger, before.as_deref(), &after).await?;
            commit = Some(after);
        }
    } else if approve && action == merge::ACTION {
        let p = pending_by_id(db, &lesson).await?;
        let main = git::open_main(dir).await?;
        let message = DreamTrailers::new(DreamAction::Merge, run, ledger).message(&format!(
            "dream: merge {lesson} approved by {by} (ledger #{ledger})"
        ));
        let path = path.ok_or(CoordinatorError::NotFound)?;
        let bytes = merge::approved_file(&main, &p, &path)?;
        drop(main);
        let (before, after) = git::write(dir, path, Some(bytes), message).await?;
        set_commits(db, ledger, before.as_deref(), &after).await?;
        set_status(db, &lesson, merge::STATUS).await?;
        commit = Some(after);
    } else if approve {
        let p = pending_by_id(db, &lesson).await?;
        let main = git::open_main(dir).await?;
        let (path, bytes) = file_of(&p, &main)?;
        let message = DreamTrailers::new(DreamAction::Promote, run, ledger).message(&format!(
            "dream: promote {lesson} approved by {by} (ledger #{ledger})"
        ));
        let (before, after) = git::write(dir, path, Some(bytes), message).await?;
        set_commits(db, ledger, before.as_deref(), &after).await?;
        set_status(db, &lesson, "accepted").await?;
        commit = Some(after);
    } else {
        set_status(db, &lesson, "rejected").await?;
    }
    sqlx::query(
        "UPDATE promotions SET open = false, decided_by = $2, decided_at = now() WHERE id = $1",
    )
    .bind(ledger)
    .bind(by)
    .execute(&mut *db)
    .await?;
    Ok(LedgerLine {
        id: Some(ledger),
        lesson,
        kind: String::new(),
        action: if approve { "approve" } else { "reject" }.into(),
        verdict,
        reason: format!("decided by {by}"),
        commit,
    })
}

async fn pending_by_id(db: &mut PgConnection, lesson: &str) -> Result<Pending, CoordinatorError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT l.id, l.kind, l.family, COALESCE(l.rule_id, w.rule_id) AS rule_id, l.body, l.pattern,
                l.scope, l.deferrals, w.run_id, w.accepted_agent AS agent, l.epoch, l.attempt,
                (w.state = 'done' AND w.accepted_epoch = l.epoch) AS accepted, true AS evidence,
                NULL::text AS refuted_skill
         FROM lessons l LEFT JOIN work_items w ON w.id = l.work_item_id WHERE l.id = $1",
    )
    .bind(lesson)
    .fetch_optional(&mut *db)
    .await?;
    row.map(pending_of).ok_or(CoordinatorError::NotFound)
}
