-- Real VM targets (issue 24): a pack says which rules need a VM
-- (`[[requires]]`); the planner keeps that need per work item, so
-- reconciliation puts a task back into the ready set only VM agents lease
-- (L6), and records `needs_target` for the rules no live agent could serve
-- when the run was planned: never leased, never escalated, never compared
-- (D6). Their `reason` is the target class they need.
ALTER TABLE work_items
    ADD COLUMN target_need text NOT NULL DEFAULT 'container'
        CHECK (target_need IN ('container', 'vm'));

ALTER TABLE work_items DROP CONSTRAINT IF EXISTS work_items_outcome_check;
ALTER TABLE work_items ADD CONSTRAINT work_items_outcome_check
    CHECK (outcome IN ('fixed', 'already_passing', 'escalated', 'needs_target'));
