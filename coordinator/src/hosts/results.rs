//! Read models of host runs: each host's state and, once finished, the
//! report of its accepted epoch (a lost lease's report never counts); a
//! composition check's figures.

use std::collections::BTreeMap;

use fleet_common::host::{BundleCheck, HostJob, HostReport, HostRow};
use fleet_common::RunId;
use sqlx::types::Json;
use sqlx::PgPool;

use crate::error::CoordinatorError;

/// A host work item's report from its accepted epoch (a lost lease's
/// report never counts); `w` is the work item.
pub(super) const ACCEPTED_REPORT: &str = "(SELECT e.body -> 'report' FROM run_events e \
     WHERE e.work_item_id = w.id AND e.kind = 'host_reported' AND e.epoch = w.accepted_epoch LIMIT 1)";

type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    bool,
    Option<Json<HostJob>>,
    i64,
    Option<Json<HostReport>>,
);

/// The hosts of `run` in inventory order.
pub async fn host_rows(pool: &PgPool, run: RunId) -> Result<Vec<HostRow>, CoordinatorError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT w.rule_id, w.state, w.outcome, w.reason, w.held, w.job,
                (SELECT count(*) FROM run_events s
                 WHERE s.work_item_id = w.id AND s.kind = 'section_applied'
                   AND s.epoch = (SELECT max(m.epoch) FROM run_events m
                                  WHERE m.work_item_id = w.id AND m.kind = 'section_applied')),
                {ACCEPTED_REPORT}
         FROM work_items w WHERE w.run_id = $1 ORDER BY w.ordinal"
    ))
    .bind(run.0)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(host, state, outcome, reason, held, job, sections, report)| HostRow {
                host,
                labels: match job.map(|j| j.0) {
                    Some(HostJob::Harden { host, .. }) => host.labels,
                    _ => BTreeMap::new(),
                },
                outcome: if state == "pending" {
                    "pending".into()
                } else {
                    outcome.unwrap_or_default()
                },
                reason,
                held: held && state == "pending",
                sections_done: sections.max(0) as u32,
                report: report.map(|r| r.0),
            },
        )
        .collect())
}

/// The figures of the composition check that followed `run`, or of `run`
/// itself when it is a compose run; `None` until one has finished.
pub async fn bundle_check(
    conn: &mut sqlx::PgConnection,
    run: RunId,
) -> Result<Option<BundleCheck>, CoordinatorError> {
    let row: Option<(i64, Json<HostJob>, Option<Json<HostReport>>)> = sqlx::query_as(&format!(
        "SELECT r.id, w.job,
                {ACCEPTED_REPORT}
         FROM runs r JOIN work_items w ON w.run_id = r.id
         WHERE r.kind = 'compose' AND r.status = 'completed' AND (r.id = $1 OR r.after_run = $1)
         ORDER BY r.id DESC LIMIT 1"
    ))
    .bind(run.0)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(id, job, report)| {
        let skills = job.0.bundle().sections.len() as u64;
        report.map(|r| BundleCheck::of(RunId(id), skills, &r.0))
    }))
}
