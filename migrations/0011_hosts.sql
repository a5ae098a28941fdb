-- Hardening hosts (DESIGN H3–H5). A run is a learning run (rule tasks), a
-- composition check of a bundle (one compose task) or a rollout to an
-- inventory (one harden task per host). Host tasks carry their job (the
-- bundle, the host) so reconciliation rebuilds them like any task (L6).
ALTER TABLE runs
    ADD COLUMN kind text NOT NULL DEFAULT 'learn' CHECK (kind IN ('learn', 'compose', 'harden')),
    -- Rollout control of a harden run: concurrency, canary, max_fail_percent.
    ADD COLUMN rollout jsonb,
    -- A compose run: the learning run whose dream stage it followed.
    ADD COLUMN after_run bigint REFERENCES runs (id),
    -- A finished compose run whose findings went to the ledger.
    ADD COLUMN reviewed_at timestamptz;

ALTER TABLE work_items
    ADD COLUMN job jsonb,
    -- A host not yet released by the rollout controller: pending, never
    -- queued, until the canary and the failure threshold allow it.
    ADD COLUMN held boolean NOT NULL DEFAULT false;

-- One composition check per learning run, however many coordinators.
CREATE UNIQUE INDEX runs_compose_after_idx ON runs (after_run)
    WHERE kind = 'compose' AND after_run IS NOT NULL;

-- An interfering or health-breaking skill leaves the bundle with an open
-- ledger entry an operator decides (`promotions`): approve puts it back,
-- reject removes it from `main`.
ALTER TABLE promotions DROP CONSTRAINT IF EXISTS promotions_action_check;
ALTER TABLE promotions ADD CONSTRAINT promotions_action_check
    CHECK (action IN ('promote', 'revert', 'bundle_exclude'));
CREATE INDEX promotions_bundle_open_idx ON promotions (rule_id)
    WHERE open AND action = 'bundle_exclude';
