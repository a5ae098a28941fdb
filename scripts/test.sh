#!/usr/bin/env bash
# Runs the whole suite. nextest runs test binaries in parallel processes;
# every test has its own Redis prefix and Postgres schema, so that is safe.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests leave their schemas and key prefixes behind when they fail (a
# failing test is easier to inspect that way); clear those of earlier runs.
# The fleet's own data (schema public, prefix fleet:) is never touched.
if [[ -n "${FLEET_DATABASE_URL:-}" ]]; then
  PGOPTIONS='-c client_min_messages=warning' psql -q "$FLEET_DATABASE_URL" -v ON_ERROR_STOP=1 -c "DO \$\$ DECLARE s text; BEGIN
    FOR s IN SELECT nspname FROM pg_namespace WHERE nspname ~ '^t_[0-9a-f]{32}\$' LOOP
      EXECUTE format('DROP SCHEMA %I CASCADE', s);
    END LOOP; END \$\$;" >/dev/null
fi
if [[ -n "${FLEET_REDIS_URL:-}" ]]; then
  for pattern in 't_*' 't-*'; do
    redis-cli -u "$FLEET_REDIS_URL" --scan --pattern "$pattern" | xargs -r -n 500 redis-cli -u "$FLEET_REDIS_URL" DEL >/dev/null
  done
fi
if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast --failure-output final "$@"
fi
exec cargo test --workspace --no-fail-fast "$@"
