-- The Reflector (issue 4): what each failed attempt's reflection came to,
-- and where each candidate lesson came from, so the dream stage can tell a
-- candidate of an accepted lease from one of a lease that was lost.
ALTER TABLE attempts ADD COLUMN reflection text;

ALTER TABLE lessons
    ADD COLUMN pattern      text,
    ADD COLUMN work_item_id bigint REFERENCES work_items (id),
    ADD COLUMN epoch        bigint,
    ADD COLUMN attempt      integer;
CREATE INDEX lessons_work_item_idx ON lessons (work_item_id);
