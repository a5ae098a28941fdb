-- How agents check a run's rules and targets (datastream, rule prefix,
-- health checks), frozen from the skill pack at submission so that
-- reconciliation re-queues exactly what the planner queued.
ALTER TABLE runs ADD COLUMN checks jsonb NOT NULL DEFAULT '{}';

-- Which of the skill pack's health checks failed after an attempt.
ALTER TABLE attempts ADD COLUMN health_failed text[] NOT NULL DEFAULT '{}';
