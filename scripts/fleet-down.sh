#!/usr/bin/env bash
# `make fleet-down`: stop agents (they hand back their leases), then the
# coordinator and Prometheus, then Redis and Postgres. Data is kept for the next `make fleet`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${FLEET_STATE_DIR:-$root/.fleet}"
stop() {
  local f="$state/pids/$1.pid"
  [[ -f "$f" ]] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "fleet-down: $1 ignored SIGTERM, killing"; kill -KILL "$pid"; }
    echo "fleet-down: stopped $1"
  fi
  rm -f "$f"
}
shopt -s nullglob
for f in "$state"/pids/agent-*.pid; do stop "$(basename "$f" .pid)"; done
stop coordinator
stop prometheus
"$root/scripts/deps-down.sh"
