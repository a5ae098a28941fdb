-- Near-duplicates merge (issue 20, DESIGN D7): a lesson or ban close to one
-- on `main` merges into it. The ledger records it as action `merge`
-- (merged_into: the lesson it merged into; path: that lesson's file), and
-- the candidate's own status becomes `merged`.
ALTER TABLE promotions DROP CONSTRAINT IF EXISTS promotions_action_check;
ALTER TABLE promotions ADD CONSTRAINT promotions_action_check
    CHECK (action IN ('promote', 'merge', 'revert', 'bundle_exclude'));
ALTER TABLE lessons DROP CONSTRAINT IF EXISTS lessons_status_check;
ALTER TABLE lessons ADD CONSTRAINT lessons_status_check
    CHECK (status IN ('candidate', 'deferred', 'escalated', 'accepted', 'merged', 'rejected',
                      'reverted'));
