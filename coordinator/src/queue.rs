//! How a work item becomes a queued task in Redis; shared by the planner
//! and reconciliation so both enqueue exactly the same thing.

use fleet_common::lease::QueuedTask;
use fleet_common::{RuleTask, RunId, TargetClass};

/// A queued task with its submission order inside its run.
pub(crate) struct PlannedTask {
    pub ordinal: i32,
    pub queued: QueuedTask,
}

/// Builds the queued form of one work item.
///
/// Ordering groups are scoped by run in Redis: the pack's group name is a
/// glob (`audit_rules_*`), and two runs of one pack must not wait on each
/// other's members. `need` picks the ready set (`work_items.target_need`).
pub(crate) fn planned_task(
    task: RuleTask,
    ordinal: i32,
    priority: u32,
    lease_loss_budget: u32,
    groups: &[String],
    hold: Option<(String, u32)>,
    need: TargetClass,
) -> PlannedTask {
    let run = task.run;
    PlannedTask {
        ordinal,
        queued: QueuedTask {
            task,
            priority,
            lease_loss_budget,
            groups: groups.iter().map(|g| scoped_group(run, g)).collect(),
            hold: hold.map(|(g, threshold)| (scoped_group(run, &g), threshold)),
            need,
        },
    }
}

/// Group members before the tasks held on them (the enqueue script counts
/// a group's members as they arrive), then by run and submission order.
pub(crate) fn into_enqueue_order(mut items: Vec<PlannedTask>) -> Vec<QueuedTask> {
    items.sort_by_key(|p| (p.queued.hold.is_some(), p.queued.task.run, p.ordinal));
    items.into_iter().map(|p| p.queued).collect()
}

fn scoped_group(run: RunId, group: &str) -> String {
    format!("{run}:{group}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::{Budgets, TaskId};

    fn task(id: i64) -> RuleTask {
        RuleTask {
            run: RunId(7),
            task: TaskId(id),
            rule: format!("r{id}"),
            family: "f".into(),
            skill_pack: "p".into(),
            profile: "s".into(),
            budgets: Budgets::default(),
            checks: Default::default(),
            rule_text: None,
            job: None,
        }
    }

    #[test]
    fn members_come_before_held_tasks_and_groups_are_per_run() {
        let g = vec!["audit_*".to_string()];
        let items = vec![
            planned_task(
                task(1),
                0,
                100,
                5,
                &[],
                Some(("audit_*".into(), 0)),
                TargetClass::Container,
            ),
            planned_task(task(3), 2, 100, 5, &g, None, TargetClass::Vm),
            planned_task(task(2), 1, 100, 5, &g, None, TargetClass::Container),
        ];
        let order = into_enqueue_order(items);
        let ids: Vec<i64> = order.iter().map(|q| q.task.task.0).collect();
        assert_eq!(ids, vec![2, 3, 1]);
        assert_eq!(order[0].groups, vec!["7:audit_*".to_string()]);
        assert_eq!(order[2].hold, Some(("7:audit_*".to_string(), 0)));
        assert_eq!(order[1].need, TargetClass::Vm);
    }
}
