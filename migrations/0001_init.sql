-- Source of truth for the fleet (DESIGN "Processes and stores").
-- Redis holds only the live queue; everything here survives it.

-- Epoch generation (DESIGN L1): bumped at every reconciliation of Redis and
-- folded into the high bits of every epoch granted afterwards.
CREATE SEQUENCE epoch_generation AS bigint START 1;

CREATE TABLE runs (
    id              bigserial PRIMARY KEY,
    skill_pack      text        NOT NULL,
    profile         text        NOT NULL,
    budgets         jsonb       NOT NULL,
    priority        integer     NOT NULL,
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'completed')),
    total           integer     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- "previous comparable run" lookups for regression analysis (D6).
CREATE INDEX runs_comparable_idx ON runs (skill_pack, profile, id DESC);

-- One rule of one run: the unit that is leased.
CREATE TABLE work_items (
    id              bigserial PRIMARY KEY,
    run_id          bigint      NOT NULL REFERENCES runs (id),
    rule_id         text        NOT NULL,
    family          text        NOT NULL,
    ordinal         integer     NOT NULL,
    groups          text[]      NOT NULL DEFAULT '{}',
    hold_group      text,
    hold_threshold  integer,
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done')),
    outcome         text CHECK (outcome IN ('fixed', 'already_passing', 'escalated')),
    reason          text,
    fixed_attempt   integer,
    attempts        integer,
    duration_ms     bigint,
    accepted_epoch  bigint,
    accepted_agent  text,
    accepted_event  text,
    finished_at     timestamptz,
    UNIQUE (run_id, rule_id)
);
CREATE INDEX work_items_pending_idx ON work_items (run_id) WHERE state = 'pending';
CREATE INDEX work_items_family_idx ON work_items (family, run_id);

CREATE TABLE agents (
    id              text PRIMARY KEY,
    host            text        NOT NULL,
    version         text        NOT NULL,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    last_registered_at timestamptz NOT NULL DEFAULT now()
);

-- Every event applied exactly once (DESIGN E2): the primary key is the
-- event id, so a redelivery is a no-op.
CREATE TABLE run_events (
    event_id        text PRIMARY KEY,
    stream_id       text        NOT NULL,
    run_id          bigint      NOT NULL REFERENCES runs (id),
    work_item_id    bigint      NOT NULL REFERENCES work_items (id),
    kind            text        NOT NULL,
    -- NULL when applied; the lease script's reason when it refused the
    -- completion (DESIGN L3: recorded, never counted).
    rejected        text,
    agent_id        text        NOT NULL,
    incarnation     integer     NOT NULL,
    seq             bigint      NOT NULL,
    epoch           bigint      NOT NULL,
    attempt         integer     NOT NULL,
    ts              timestamptz NOT NULL,
    body            jsonb       NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_events_item_idx ON run_events (work_item_id, epoch, attempt);
CREATE INDEX run_events_run_kind_idx ON run_events (run_id, kind);
CREATE INDEX run_events_agent_seq_idx ON run_events (agent_id, incarnation, seq);
CREATE INDEX run_events_body_idx ON run_events USING gin (body jsonb_path_ops);

-- Entries that could not be applied (DESIGN E3): kept verbatim, counted.
CREATE TABLE quarantined_events (
    id              bigserial PRIMARY KEY,
    stream_id       text        NOT NULL UNIQUE,
    reason          text        NOT NULL,
    detail          text        NOT NULL,
    raw             bytea       NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantined_events_reason_idx ON quarantined_events (reason, received_at);

-- One attempt of one lease of one work item.
CREATE TABLE attempts (
    id              bigserial PRIMARY KEY,
    work_item_id    bigint      NOT NULL REFERENCES work_items (id),
    epoch           bigint      NOT NULL,
    attempt         integer     NOT NULL,
    agent_id        text        NOT NULL,
    script          text,
    eval_status     text,
    health_ok       boolean,
    started_at      timestamptz NOT NULL,
    evaluated_at    timestamptz,
    UNIQUE (work_item_id, epoch, attempt)
);

CREATE TABLE lessons (
    id              text PRIMARY KEY,
    family          text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('lesson', 'ban', 'skill')),
    scope           text        NOT NULL,
    body            text        NOT NULL,
    provenance      jsonb       NOT NULL,
    created_run_id  bigint REFERENCES runs (id),
    status          text        NOT NULL DEFAULT 'candidate'
                    CHECK (status IN ('candidate', 'accepted', 'rejected', 'reverted')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lessons_family_idx ON lessons (family, status);

-- Which lessons were in which attempt's prompt (DESIGN E4, D1).
CREATE TABLE lesson_attributions (
    attempt_id      bigint           NOT NULL REFERENCES attempts (id),
    lesson_id       text             NOT NULL,
    rank            integer          NOT NULL,
    score           double precision NOT NULL,
    PRIMARY KEY (attempt_id, lesson_id)
);
CREATE INDEX lesson_attributions_lesson_idx ON lesson_attributions (lesson_id);

-- Credit per (family, lesson) and per (rule, lesson): rule_id '' is the
-- family-level row. Recomputed from all data, never incremented (D1).
CREATE TABLE lesson_credit (
    family          text             NOT NULL,
    rule_id         text             NOT NULL DEFAULT '',
    lesson_id       text             NOT NULL,
    shown           bigint           NOT NULL,
    wins            bigint           NOT NULL,
    alpha           double precision NOT NULL,
    beta            double precision NOT NULL,
    score           double precision NOT NULL,
    computed_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (family, rule_id, lesson_id)
);

-- Promotion ledger (DESIGN D7, D8).
CREATE TABLE promotions (
    id              bigserial PRIMARY KEY,
    run_id          bigint      NOT NULL REFERENCES runs (id),
    lesson_id       text        NOT NULL,
    verdict         text        NOT NULL CHECK (verdict IN ('APPLY', 'REJECT', 'ESCALATE', 'DEFER')),
    gates           jsonb       NOT NULL,
    commit_before   text,
    commit_after    text,
    reason          text,
    reverted_by     bigint REFERENCES promotions (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX promotions_run_idx ON promotions (run_id, verdict);
