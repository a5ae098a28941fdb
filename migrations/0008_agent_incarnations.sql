-- Incarnations of each agent, numbered at registration (E1): Postgres keeps
-- the count, so a Redis that comes back empty cannot hand a number out twice.
ALTER TABLE agents ADD COLUMN incarnations bigint NOT NULL DEFAULT 0;
