# shellcheck shell=bash disable=SC2034
# Sourced by deps.sh and deps-down.sh: where the fleet's PostgreSQL cluster
# lives for a given state dir ($STATE must be an absolute, resolved path).
#
# Postgres runs as user postgres, which must be able to enter every parent
# of its data dir. A checkout under a private home (mode 700) cannot host it,
# so the cluster then lives under /var/lib, keyed by the state dir. Decided
# from permissions alone, so every run (and deps-down) agrees.
others_can_enter_parents() {
    local d
    d=$(dirname -- "$1")
    while :; do
        local mode
        mode=$(stat -c %A -- "$d") || return 1
        [[ ${mode:9:1} == [xt] ]] || return 1
        [[ $d == / ]] && return 0
        d=$(dirname -- "$d")
    done
}

if others_can_enter_parents "$STATE"; then
    PG_DIR=$STATE/pg
else
    PG_DIR=/var/lib/fleet-pg/$(printf '%s' "$STATE" | sha1sum | cut -c1-12)
fi
