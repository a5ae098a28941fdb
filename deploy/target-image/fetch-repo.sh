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
extra=(/extra/*.deb)
log "resolving ${#pkgs[@]} rule packages + ${#extra[@]} local packages"
mkdir -p /archives/partial /tmp/empty-archives/partial
# closure ARGS...: append to /tmp/uris every .deb that `apt-get install ARGS`
# needs on the base (--print-uris against an empty cache lists them whether
# /archives holds them or not), then download what /archives lacks.
closure() {
    apt-get install -y -qq --print-uris -o Dir::Cache::Archives=/tmp/empty-archives "$@" >>/tmp/uris ||
        die "apt cannot resolve: apt-get install $*"
    apt-get install -y -qq --download-only -o Dir::Cache::Archives=/archives "$@" >/dev/null ||
        die "downloading the closure of '$*' failed"
}
: >/tmp/uris
closure "${extra[@]}"
# One package at a time, as a rule installs it: alternatives resolve as they
# would on the target, and packages that conflict (chrony, ntp) both fit.
for p in "${pkgs[@]}"; do closure "$p"; done
n=0
while read -r url file _rest; do
    [[ $url == file:* ]] && continue # /extra's own packages
    cp -- "/archives/$file" /repo/ || die "$file missing from /archives after download"
    n=$((n + 1))
done < <(grep "^'" /tmp/uris | tr -d "'" | sort -u -k2,2)
cp -- "${extra[@]}" /repo/
log "repo holds $n downloaded + ${#extra[@]} local packages"
