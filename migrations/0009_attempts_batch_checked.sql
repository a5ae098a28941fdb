-- attempts and lesson_attributions rows are written only by the ingester, a
-- batch at a time, as run_events are (0007). Their foreign keys cost a
-- trigger, an index probe and a row lock per row, about half of a batch's
-- attempt writes. The ingester already holds what they checked: every work
-- item of a batch is looked up and locked FOR KEY SHARE once per batch
-- (coordinator/src/ingest/apply.rs), and every attribution's attempt id is
-- the one the same transaction's attempt upsert just returned. Work items
-- and attempts are never deleted.
ALTER TABLE attempts
    DROP CONSTRAINT IF EXISTS attempts_work_item_id_fkey;
ALTER TABLE lesson_attributions
    DROP CONSTRAINT IF EXISTS lesson_attributions_attempt_id_fkey;
