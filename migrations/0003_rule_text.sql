-- The rule's text from the SCAP content (title, description, rationale,
-- severity) as the planner found it, so reconciliation re-queues tasks
-- with the same prompt material.
ALTER TABLE work_items ADD COLUMN rule_text jsonb;
