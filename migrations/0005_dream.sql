-- The dream stage (issue 6, DESIGN D1–D8).

-- One row per run the dream stage handled; a completed run without a row
-- is picked up at the next start.
CREATE TABLE dream_runs (
    run_id          bigint PRIMARY KEY REFERENCES runs (id),
    status          text        NOT NULL CHECK (status IN ('done', 'failed')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    main_before     text,
    main_after      text,
    error           text
);

-- Regression analysis against the previous comparable run (D6).
CREATE TABLE run_comparisons (
    run_id                  bigint PRIMARY KEY REFERENCES runs (id),
    previous_run_id         bigint NOT NULL REFERENCES runs (id),
    wins                    integer NOT NULL,
    regressions             integer NOT NULL,
    fix_rate                double precision,
    previous_fix_rate       double precision,
    first_try_rate          double precision,
    previous_first_try_rate double precision,
    computed_at             timestamptz NOT NULL DEFAULT now()
);

-- The rules whose outcome changed, with the lessons their prompts showed.
CREATE TABLE rule_changes (
    run_id          bigint NOT NULL REFERENCES runs (id),
    rule_id         text   NOT NULL,
    change          text   NOT NULL CHECK (change IN ('win', 'regression')),
    lessons_shown   text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, rule_id)
);

-- Candidates go through the gates; deferred ones wait for the next run.
ALTER TABLE lessons DROP CONSTRAINT lessons_status_check;
ALTER TABLE lessons ADD CONSTRAINT lessons_status_check
    CHECK (status IN ('candidate', 'deferred', 'escalated', 'accepted', 'rejected', 'reverted'));
ALTER TABLE lessons
    ADD COLUMN rule_id   text,
    ADD COLUMN deferrals integer NOT NULL DEFAULT 0;

-- The ledger (D7, D8): every gate's result, what moved `main`, reverts.
ALTER TABLE promotions
    ADD COLUMN action     text NOT NULL DEFAULT 'promote' CHECK (action IN ('promote', 'revert')),
    ADD COLUMN kind       text,
    ADD COLUMN family     text,
    ADD COLUMN rule_id    text,
    ADD COLUMN path       text,
    ADD COLUMN merged_into text,
    ADD COLUMN open       boolean NOT NULL DEFAULT false,
    ADD COLUMN decided_by text,
    ADD COLUMN decided_at timestamptz;
CREATE INDEX promotions_open_idx ON promotions (open) WHERE open;
