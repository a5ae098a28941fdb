-- DESIGN H1: where each attempt's script came from. 'skill' is a replay of
-- skills/<rule>.sh from the main the lease fetched (its git blob and that
-- commit); 'brain' a script the brain proposed. NULL until the attempt's
-- script_proposed event is ingested. Version-1 events read as 'brain'.
ALTER TABLE attempts
    ADD COLUMN script_source text CHECK (script_source IN ('brain', 'skill')),
    ADD COLUMN skill_blob    text,
    ADD COLUMN skill_commit  text,
    ADD CONSTRAINT attempts_skill_names_its_blob CHECK (
        CASE script_source
            WHEN 'skill' THEN skill_blob IS NOT NULL AND skill_commit IS NOT NULL
            ELSE skill_blob IS NULL AND skill_commit IS NULL
        END);
