#!/usr/bin/env bash
# Runs inside a throw-away Debian 11 container (with network) started by
# scripts/target-image.sh: resolves, against the base image, the dependency
# closure of each repo package and of openscap-scanner/ssg-*, downloads it into
# /archives (a cache kept across builds) and copies exactly that closure into
# /repo.
#
#   /extra/*.deb          packages not in Debian 11 (our openscap-scanner, ssg-*)
#   /packages.txt         rule packages, one a line, '#' comments
#   /archives             apt's download cache (persistent, shared)
#   /repo                 output: the .debs of the closure (and /extra's)
set -euo pipefail
log() { echo "fetch-repo: $*" >&2; }
die() { echo "fetch-repo: ERROR: $*" >&2; exit 1; }
: "${DEBIAN_MIRROR:?}" "${DEBIAN_SUITE:?}"
export DEBIAN_FRONTEND=noninteractive

echo "deb $DEBIAN_MIRROR $DEBIAN_SUITE main" >/etc/apt/sources.list
rm -f /etc/apt/sources.list.d/*
# The target installs without Recommends too (see assemble-target.sh).
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >/etc/apt/apt.conf.d/90fleet
apt-get update -qq

mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' /packages.txt | grep -v '^$')
mkdir -p /tmp/empty-archives/partial
: >/tmp/uris
files=()
# closure ARGS...: append to /tmp/uris every .deb that `apt-get install ARGS`
# needs on the base (--print-uris against an empty cache lists them all,
# whether /archives holds them or not).
closure() {
    apt-get install -y -qq --print-uris -o Dir::Cache::Archives=/tmp/empty-archives "$@" >>/tmp/uris ||
        die "apt cannot resolve: apt-get install $*"
}
# download_missing: fetch into /archives the listed .debs it lacks.
download_missing() {
    local f name rest ver missing=()
    mapfile -t files < <(grep "^'http" /tmp/uris | cut -d' ' -f2 | sort -u)
    for f in "${files[@]}"; do
        [[ -f /archives/$f ]] && continue
        name=${f%%_*} rest=${f#*_}
        ver=${rest%_*}
        missing+=("$name=${ver//%3a/:}")
    done
    ((${#missing[@]})) || return 0
    log "downloading ${#missing[@]} of ${#files[@]} packages"
    (cd /archives && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}") ||
        die "apt-get download failed"
}

# One package at a time, as a rule installs it: alternatives resolve as they
# would on the target, and packages that conflict (chrony, ntp) both fit.
log "resolving ${#pkgs[@]} rule packages"
for p in "${pkgs[@]}"; do closure "$p"; done
download_missing

# Our openscap-scanner may still be compiling: the caller touches /extra/.ready.
for _ in $(seq 1 3600); do
    [[ -e /extra/.ready ]] && break
    sleep 1
done
[[ -e /extra/.ready ]] || die "the local packages never arrived in /extra"
extra=(/extra/*.deb)
log "resolving ${#extra[@]} local packages: ${extra[*]##*/}"
closure "${extra[@]}"
download_missing

for f in "${files[@]}"; do
    cp -- "/archives/$f" /repo/ || die "$f missing from /archives after download"
done
cp -- "${extra[@]}" /repo/
log "repo holds ${#files[@]} downloaded + ${#extra[@]} local packages"
