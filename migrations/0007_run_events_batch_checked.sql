-- run_events rows are written only by the ingester, a batch at a time. The
-- two foreign keys cost a trigger and an index probe per row per key (about
-- as much as the row itself); the ingester instead checks every (run, work
-- item) of a batch in one statement that takes the same FOR KEY SHARE locks
-- the foreign-key checks took (coordinator/src/ingest/apply.rs), and quarantines
-- events whose task is not a work item of their run. Runs and work items are
-- never deleted.
ALTER TABLE run_events
    DROP CONSTRAINT IF EXISTS run_events_run_id_fkey,
    DROP CONSTRAINT IF EXISTS run_events_work_item_id_fkey;
