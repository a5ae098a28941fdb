#!/usr/bin/env bash
# Install (from Debian packages, if missing) and start the fleet's own Redis and
# PostgreSQL instances on loopback; also install Prometheus (never started here:
# `make fleet` starts its own) and docker-compose (for the tests). Idempotent: a
# second run with everything up is a fast no-op. Data lives under the state dir
# and is kept across restarts.
#
#   FLEET_STATE_DIR    state dir            (default: <repo root>/.fleet)
#   FLEET_REDIS_PORT   Redis port           (default: 56379)
#   FLEET_PG_PORT      PostgreSQL port      (default: 55432)
#   FLEET_PG_PASSWORD  password of role 'fleet' (default: fleet)
#
# Writes $FLEET_STATE_DIR/env (source it) with FLEET_REDIS_URL and FLEET_DATABASE_URL.
# Stop both instances with scripts/deps-down.sh (data is kept).
set -euo pipefail

t0=$(date +%s%N)
log() { echo "deps: $*" >&2; }
die() { echo "deps: ERROR: $*" >&2; exit 1; }

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(dirname -- "$SCRIPT_DIR")
STATE=${FLEET_STATE_DIR:-$REPO_ROOT/.fleet}
REDIS_PORT=${FLEET_REDIS_PORT:-56379}
PG_PORT=${FLEET_PG_PORT:-55432}
PG_PASSWORD=${FLEET_PG_PASSWORD:-fleet}
PG_ROLE=fleet
PG_DB=fleet

[[ $REDIS_PORT =~ ^[0-9]+$ ]] || die "FLEET_REDIS_PORT must be a number, got '$REDIS_PORT'"
[[ $PG_PORT =~ ^[0-9]+$ ]] || die "FLEET_PG_PORT must be a number, got '$PG_PORT'"
[[ $REDIS_PORT != "$PG_PORT" ]] || die "FLEET_REDIS_PORT and FLEET_PG_PORT must differ (both $PG_PORT)"
[[ -n $PG_PASSWORD ]] || die "FLEET_PG_PASSWORD must not be empty"

mkdir -p -- "$STATE"
STATE=$(cd -- "$STATE" && pwd -P)
cd / # all paths below are absolute; tools run as postgres need a readable cwd

# Something (anything) accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- packages ---
pg_bin_dir() { # the numerically highest installed PostgreSQL version
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [[ -x $d/pg_ctl ]]; then echo "$d"; fi
    done | sort -V | tail -n 1
}

pkgs=()
command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
{ command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; } || pkgs+=(redis-tools)
[[ -n $(pg_bin_dir) ]] || pkgs+=(postgresql)
# The coordinator reads the skill packs' SCAP datastreams for its rule
# catalog, and tests compare that catalog with what oscap itself selects.
command -v oscap >/dev/null 2>&1 || pkgs+=(openscap-scanner)
for p in ssg-base ssg-debian ssg-nondebian; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
done
# Prometheus and promtool: `make fleet` starts its own Prometheus with
# deploy/prometheus/prometheus.yml; the tests run promtool on deploy/.
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || pkgs+=(prometheus)
# The tests validate deploy/docker-compose.yml with `docker compose config`
# (Compose v2) or Debian's `docker-compose` (v1), whichever exists.
{ command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; } || pkgs+=(docker-compose)
# The tests check the shipped units with `systemd-analyze verify`.
command -v systemd-analyze >/dev/null 2>&1 || pkgs+=(systemd)
# The tests apply the Ansible export (`fleet-coordinator export --format
# ansible`) to a target container through community.docker's `docker`
# connection: Debian's `ansible` ships ansible-core with that collection.
{ command -v ansible-playbook >/dev/null 2>&1 \
    && [[ -d /usr/lib/python3/dist-packages/ansible_collections/community/docker ]]; } || pkgs+=(ansible)

if ((${#pkgs[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages (${pkgs[*]}): run this script as root so it can apt-get install them"
    log "installing Debian packages: ${pkgs[*]} (this takes a minute)"
    # Keep the packages' maintainer scripts from starting system-wide services:
    # we run our own instances on our own ports.
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, installed by fleet scripts/deps.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
        trap 'if [[ $created_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/apt.log" 2>&1 ||
        die "apt-get update failed (see $STATE/apt.log): check access to the Debian mirrors"
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$STATE/apt.log" 2>&1 ||
        die "apt-get install ${pkgs[*]} failed (see $STATE/apt.log); if dpkg was interrupted run 'dpkg --configure -a' and retry"
    if [[ $created_policy -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
        created_policy=0
    fi
    if [[ " ${pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
        # The package enables Debian's own prometheus.service (port 9090,
        # /etc/prometheus); ours is started by `make fleet`. Stop it (if systemd
        # runs and started it anyway) and mask it; `systemctl unmask prometheus`
        # undoes that.
        systemctl stop prometheus.service >>"$STATE/apt.log" 2>&1 || true
        { systemctl disable prometheus.service && systemctl mask prometheus.service; } >>"$STATE/apt.log" 2>&1 ||
            log "warning: could not disable and mask Debian's prometheus.service (see $STATE/apt.log); it may take port 9090 at boot"
    fi
    log "packages installed"
fi

# qemu (TCG) for the VM target's tests: the QMP client drives a real qemu.
# shellcheck source=scripts/lib/qemu.sh
source "$SCRIPT_DIR/lib/qemu.sh"
mkdir -p "$STATE"
ensure_qemu "$STATE/apt.log"

command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after install: apt-get install redis-server"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli still missing after install: apt-get install redis-tools"
command -v redis-benchmark >/dev/null 2>&1 || die "redis-benchmark still missing after install: apt-get install redis-tools"
command -v promtool >/dev/null 2>&1 || die "promtool still missing after install: apt-get install prometheus"
PGBIN=$(pg_bin_dir)
[[ -n $PGBIN ]] || die "no /usr/lib/postgresql/*/bin/pg_ctl after install: apt-get install postgresql"

# ------------------------------------------------------------------- redis ---
REDIS_DIR=$STATE/redis
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_ours() { # the Redis answering on our port uses our data dir
    local dir
    dir=$(rcli config get dir 2>/dev/null | sed -n 2p) || return 1
    [[ $dir == "$REDIS_DIR" ]]
}

if [[ $(rcli ping 2>/dev/null) == PONG ]]; then
    redis_ours || die "a Redis that is not ours (data dir '$(rcli config get dir 2>/dev/null | sed -n 2p)') answers on 127.0.0.1:$REDIS_PORT; stop it or pick another port with FLEET_REDIS_PORT=..."
    log "redis already running on 127.0.0.1:$REDIS_PORT"
else
    port_open "$REDIS_PORT" &&
        die "127.0.0.1:$REDIS_PORT is taken by something that is not our Redis ('ss -ltnp | grep :$REDIS_PORT' shows what); stop it or pick another port with FLEET_REDIS_PORT=..."
    mkdir -p -- "$REDIS_DIR"
    cat >"$REDIS_DIR/redis.conf" <<EOF
# Generated by scripts/deps.sh -- edits are overwritten on the next start.
# The fleet's own Redis: loopback only, own port, own data dir.
port $REDIS_PORT
bind 127.0.0.1
protected-mode yes
daemonize yes
pidfile $REDIS_DIR/redis.pid
logfile $REDIS_DIR/redis.log
dir $REDIS_DIR

# Durability: every write is in the append-only file and fsynced before Redis
# acknowledges it. A Redis that restarts must not have silently lost acknowledged
# lease grants -- epochs must never be reissued. (A Redis that comes back *empty*
# is detected by the fleet and rebuilt from Postgres instead; a Redis that comes
# back with a silently truncated history is not, hence appendfsync always.)
appendonly yes
appendfsync always
appendfilename "appendonly.aof"
# The AOF is the source of truth; no periodic RDB snapshots (they would only add
# fork pauses).
save ""
EOF
    log "starting redis on 127.0.0.1:$REDIS_PORT (data in $REDIS_DIR)"
    redis-server "$REDIS_DIR/redis.conf" ||
        die "redis-server failed to start; see $REDIS_DIR/redis.log"
    for _ in $(seq 1 100); do
        [[ $(rcli ping 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
    if [[ $(rcli ping 2>/dev/null) != PONG ]]; then
        tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
        die "redis did not answer PING within 10 s; see $REDIS_DIR/redis.log (a large AOF may still be loading: rerun this script)"
    fi
    redis_ours || die "redis on 127.0.0.1:$REDIS_PORT does not use $REDIS_DIR; see $REDIS_DIR/redis.log"
fi

# -------------------------------------------------------------- postgresql ---
# shellcheck source=scripts/lib/pg-dir.sh
source "$SCRIPT_DIR/lib/pg-dir.sh"
[[ $PG_DIR == "$STATE/pg" ]] || log "user postgres cannot enter $STATE; its cluster lives in $PG_DIR"
PG_DATA=$PG_DIR/data
PG_RUN=$PG_DIR/run
PG_LOG=$PG_DIR/log
asuser() { runuser -u postgres -- "$@"; }
pg_ready_tcp() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }
# Via our socket, as postgres (peer auth), so probes leave no auth failures in the log.
pg_ready_ours() {
    [[ -S $PG_RUN/.s.PGSQL.$PG_PORT ]] &&
        asuser "$PGBIN/pg_isready" -q -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres -t 2
}

sock="$PG_RUN/.s.PGSQL.$PG_PORT"
((${#sock} <= 100)) || die "unix socket path '$sock' is too long for PostgreSQL (max ~100 chars); set FLEET_STATE_DIR to a shorter path"

if pg_ready_tcp; then
    pg_ready_ours || die "a PostgreSQL that is not ours answers on 127.0.0.1:$PG_PORT (no socket in $PG_RUN); stop it or pick another port with FLEET_PG_PORT=..."
    log "postgres already running on 127.0.0.1:$PG_PORT"
else
    if ! getent passwd postgres >/dev/null; then
        log "creating system user postgres"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres ||
            die "could not create system user 'postgres'; create it by hand (useradd --system --user-group postgres)"
    fi
    mkdir -p -- "$PG_DATA" "$PG_RUN" "$PG_LOG"
    chmod 0755 "$STATE" "$(dirname -- "$PG_DIR")"
    chown -R postgres:postgres "$PG_DIR"
    chmod 0700 "$PG_DATA"
    asuser test -x "$PG_DIR" -a -w "$PG_DATA" ||
        die "user postgres cannot reach $PG_DIR (a parent directory is not traversable, e.g. a home dir with mode 700); set FLEET_STATE_DIR to a directory outside it, e.g. FLEET_STATE_DIR=/var/tmp/fleet"

    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        [[ -z $(ls -A "$PG_DATA") ]] ||
            die "$PG_DATA is not empty but holds no PostgreSQL cluster; move it away (or delete it) and rerun"
        log "initdb: new cluster in $PG_DATA"
        asuser "$PGBIN/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --no-locale \
            --auth-local=peer --auth-host=scram-sha-256 >"$PG_LOG/initdb.log" 2>&1 ||
            { tail -n 20 "$PG_LOG/initdb.log" >&2; die "initdb failed; see $PG_LOG/initdb.log"; }
        echo "include_if_exists = 'fleet.conf'" | asuser tee -a "$PG_DATA/postgresql.conf" >/dev/null
    fi
    pgver=$(cat "$PG_DATA/PG_VERSION")
    [[ $PGBIN == "/usr/lib/postgresql/$pgver/bin" ]] || {
        [[ -x /usr/lib/postgresql/$pgver/bin/pg_ctl ]] ||
            die "$PG_DATA is a PostgreSQL $pgver cluster but only $PGBIN is installed; apt-get install postgresql-$pgver (or delete $PG_DIR to start over)"
        PGBIN=/usr/lib/postgresql/$pgver/bin
    }

    # Settings and auth are rewritten on every start (they take effect now).
    asuser tee "$PG_DATA/fleet.conf" >/dev/null <<EOF
# Generated by scripts/deps.sh -- edits are overwritten on the next start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
fsync = on
max_connections = 300
shared_buffers = 256MB
password_encryption = 'scram-sha-256'
EOF
    asuser tee "$PG_DATA/pg_hba.conf" >/dev/null <<EOF
# Generated by scripts/deps.sh -- edits are overwritten on the next start.
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 peer
local   replication postgres               peer
host    all       all       127.0.0.1/32   scram-sha-256
EOF

    if asuser "$PGBIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
        log "postgres is starting up; waiting for it"
    else
        port_open "$PG_PORT" &&
            die "127.0.0.1:$PG_PORT is taken by something that is not our PostgreSQL ('ss -ltnp | grep :$PG_PORT' shows what); stop it or pick another port with FLEET_PG_PORT=..."
        log "starting postgres on 127.0.0.1:$PG_PORT (data in $PG_DATA)"
        asuser "$PGBIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG/postgresql.log" -w -t 120 >/dev/null ||
            { tail -n 20 "$PG_LOG/postgresql.log" >&2; die "postgres failed to start; see $PG_LOG/postgresql.log"; }
    fi
    for _ in $(seq 1 600); do
        pg_ready_ours && break
        sleep 0.1
    done
    pg_ready_ours || die "postgres did not become ready within 60 s; see $PG_LOG/postgresql.log"
fi

# Role and database (skipped when the role can already log in to its database).
if ! PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -q -w -h 127.0.0.1 -p "$PG_PORT" \
    -U "$PG_ROLE" -d "$PG_DB" -tAc 'select 1' >/dev/null 2>&1; then
    log "creating/updating role $PG_ROLE and database $PG_DB"
    # psql runs as postgres; the SQL comes on stdin so postgres needs no access to this repo.
    asuser "$PGBIN/psql" -X -q -h "$PG_RUN" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 \
        -v role="$PG_ROLE" -v db="$PG_DB" -v pw="$PG_PASSWORD" >/dev/null <<'SQL' ||
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role') \gexec
SELECT format('GRANT ALL PRIVILEGES ON DATABASE %I TO %I', :'db', :'role') \gexec
SQL
        die "creating role/database failed; see $PG_LOG/postgresql.log"
    PGPASSWORD=$PG_PASSWORD "$PGBIN/psql" -X -q -w -h 127.0.0.1 -p "$PG_PORT" \
        -U "$PG_ROLE" -d "$PG_DB" -tAc 'select 1' >/dev/null ||
        die "role $PG_ROLE still cannot log in to $PG_DB over 127.0.0.1:$PG_PORT; see $PG_LOG/postgresql.log"
fi

# The coordinator's own role (issue 9, least privilege): it logs in and owns
# its database, nothing more: no superuser, no CREATEDB/CREATEROLE, no
# replication, no row-security bypass, no connecting to other databases, no
# server files or programs. (Role `fleet` above keeps CREATEDB: the test
# suite makes a database per test.)
COORD_ROLE=fleet_coordinator
COORD_DB=fleet_coordinator
COORD_PW_FILE="$STATE/pg-coordinator.password"
if [[ ! -s "$COORD_PW_FILE" ]]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$COORD_PW_FILE")
fi
COORD_PW=$(cat "$COORD_PW_FILE")
if ! PGPASSWORD=$COORD_PW PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -q -w -h 127.0.0.1 -p "$PG_PORT" \
    -U "$COORD_ROLE" -d "$COORD_DB" -tAc 'select 1' >/dev/null 2>&1; then
    log "creating/updating the coordinator's least-privilege role $COORD_ROLE"
    asuser "$PGBIN/psql" -X -q -h "$PG_RUN" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 \
        -v role="$COORD_ROLE" -v db="$COORD_DB" -v pw="$COORD_PW" -v testdb="$PG_DB" >/dev/null <<'SQL' ||
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 64 PASSWORD %L', :'role', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', d)
  FROM unnest(ARRAY['postgres', :'testdb']) AS d \gexec
SQL
        die "creating the coordinator's role failed; see $PG_LOG/postgresql.log"
fi

# --------------------------------------------------------------------- env ---
urlencode() {
    local LC_ALL=C s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [a-zA-Z0-9._~-]) out+=$c ;;
            *) printf -v c '%%%02X' "'$c"; out+=$c ;;
        esac
    done
    printf '%s' "$out"
}
DB_URL_NOPW=postgres://$PG_ROLE@127.0.0.1:$PG_PORT/$PG_DB
DB_URL=postgres://$PG_ROLE:$(urlencode "$PG_PASSWORD")@127.0.0.1:$PG_PORT/$PG_DB
umask 077
cat >"$STATE/env.tmp" <<EOF
# Generated by scripts/deps.sh; source it: . $STATE/env
export FLEET_REDIS_URL=$(printf '%q' "$REDIS_URL")
export FLEET_DATABASE_URL=$(printf '%q' "$DB_URL")
export FLEET_COORDINATOR_DATABASE_URL=$(printf '%q' "postgres://$COORD_ROLE:$(urlencode "$COORD_PW")@127.0.0.1:$PG_PORT/$COORD_DB")
EOF
mv -f "$STATE/env.tmp" "$STATE/env"

ms=$((($(date +%s%N) - t0) / 1000000))
printf 'deps: redis=%s postgres=%s ready in %d.%02ds\n' "$REDIS_URL" "$DB_URL_NOPW" $((ms / 1000)) $((ms % 1000 / 10))
