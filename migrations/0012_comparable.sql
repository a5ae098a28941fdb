-- Comparable outcomes only (DESIGN D6, amended): a run's comparison keeps
-- apart the rules whose outcome says nothing about knowledge (an
-- infrastructure escalation reason), and says why a run reverted nothing.
ALTER TABLE run_comparisons
    ADD COLUMN not_comparable          jsonb   NOT NULL DEFAULT '{}',
    ADD COLUMN previous_not_comparable integer NOT NULL DEFAULT 0,
    ADD COLUMN revert_withheld         text;
