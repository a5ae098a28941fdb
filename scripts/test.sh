#!/usr/bin/env bash
# Runs the whole suite. nextest runs test binaries in parallel processes;
# every test has its own Redis prefix and Postgres schema, so that is safe.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast --failure-output final "$@"
fi
exec cargo test --workspace --no-fail-fast "$@"
