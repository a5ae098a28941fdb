-- Per-agent credentials (issue 9): tokens issued and revoked through the
-- coordinator. Only a SHA-256 of each token is kept; the token itself is
-- shown once, when issued.
CREATE TABLE agent_tokens (
    id            bigserial   PRIMARY KEY,
    agent_id      text        NOT NULL,
    token_sha256  bytea       NOT NULL UNIQUE,
    issued_by     text        NOT NULL,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX agent_tokens_agent ON agent_tokens (agent_id);

-- A revoked agent may not register again, not even with the enrollment
-- token, until a new token is issued to it.
ALTER TABLE agents ALTER COLUMN host SET DEFAULT '';
ALTER TABLE agents ALTER COLUMN version SET DEFAULT '';
ALTER TABLE agents ADD COLUMN revoked_at timestamptz;
