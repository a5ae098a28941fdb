#!/usr/bin/env bash
# Stop the fleet's own Redis and PostgreSQL instances started by scripts/deps.sh.
# Tolerant of them not running. Data is kept; scripts/deps.sh starts them again.
# Honours the same FLEET_STATE_DIR / FLEET_REDIS_PORT / FLEET_PG_PORT as deps.sh.
set -euo pipefail

log() { echo "deps: $*" >&2; }
die() { echo "deps: ERROR: $*" >&2; exit 1; }

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(dirname -- "$SCRIPT_DIR")
STATE=${FLEET_STATE_DIR:-$REPO_ROOT/.fleet}
REDIS_PORT=${FLEET_REDIS_PORT:-56379}
PG_PORT=${FLEET_PG_PORT:-55432}

if [[ ! -d $STATE ]]; then
    log "no state dir $STATE: nothing to stop"
    exit 0
fi
STATE=$(cd -- "$STATE" && pwd -P)
cd / # all paths below are absolute; tools run as postgres need a readable cwd

# ------------------------------------------------------------------- redis ---
REDIS_DIR=$STATE/redis
redis_pid() { # pid of our redis-server, if its pidfile names a live process
    local pid
    pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

if ! command -v redis-cli >/dev/null 2>&1; then
    log "redis-cli not installed: redis not running"
elif [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
    dir=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get dir 2>/dev/null | sed -n 2p)
    if [[ $dir != "$REDIS_DIR" ]]; then
        log "the Redis on 127.0.0.1:$REDIS_PORT is not ours (data dir '$dir'): leaving it alone"
    else
        pid=$(redis_pid || true)
        log "stopping redis on 127.0.0.1:$REDIS_PORT"
        # SHUTDOWN fsyncs the AOF before exiting; the connection closing is expected.
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
        for _ in $(seq 1 300); do
            if [[ -n $pid ]]; then kill -0 "$pid" 2>/dev/null || break
            else [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] || break
            fi
            sleep 0.1
        done
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            die "redis (pid $pid) did not exit within 30 s; see $REDIS_DIR/redis.log"
        fi
        log "redis stopped"
    fi
else
    log "redis not running on 127.0.0.1:$REDIS_PORT"
fi

# -------------------------------------------------------------- postgresql ---
# shellcheck source=scripts/lib/pg-dir.sh
source "$SCRIPT_DIR/lib/pg-dir.sh"
PG_DATA=$PG_DIR/data
PGBIN=""
if [[ -f $PG_DATA/PG_VERSION ]]; then
    PGBIN=/usr/lib/postgresql/$(cat "$PG_DATA/PG_VERSION")/bin
fi
if [[ -z $PGBIN ]]; then
    log "no postgres cluster in $PG_DATA: nothing to stop"
elif [[ ! -x $PGBIN/pg_ctl ]]; then
    log "$PGBIN/pg_ctl not installed: postgres not running"
elif runuser -u postgres -- "$PGBIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
    log "stopping postgres on 127.0.0.1:$PG_PORT"
    runuser -u postgres -- "$PGBIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null ||
        die "postgres did not stop within 60 s; see $PG_DIR/log/postgresql.log (try: runuser -u postgres -- $PGBIN/pg_ctl stop -D $PG_DATA -m immediate)"
    log "postgres stopped"
else
    log "postgres not running (cluster $PG_DATA)"
fi
