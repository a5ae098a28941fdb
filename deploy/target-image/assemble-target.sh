#!/usr/bin/env bash
# Runs inside a container of the base image, with no network, started by
# scripts/target-image.sh; the container is then exported as the target image.
#
# Makes /srv/fleet-repo (copied from /mnt/repo) the ONLY package source,
# installs openscap-scanner, ssg-base and ssg-debian from it, and checks that
# every rule package can be installed offline (they stay uninstalled).
set -euo pipefail
log() { echo "assemble-target: $*" >&2; }
die() { echo "assemble-target: ERROR: $*" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
REPO=/srv/fleet-repo

mkdir -p "$REPO"
cp -a /mnt/repo/. "$REPO/"
rm -f /etc/apt/sources.list.d/*
cat >/etc/apt/sources.list <<SOURCES
# The target's only package source: an offline flat repository holding the
# packages rules may install (built by scripts/target-image.sh).
deb [trusted=yes] file:$REPO ./
SOURCES
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >/etc/apt/apt.conf.d/90fleet
# Package installs never start daemons in the target (there is no init, and
# e.g. auditd cannot start in a container): rules check configuration.
printf '#!/bin/sh\n# fleet target: services are not started by package installs\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
install -m 0755 /mnt/def/entrypoint.sh /usr/local/sbin/fleet-target-entrypoint

apt-get update -qq
log "installing openscap-scanner ssg-base ssg-debian from $REPO"
apt-get install -y -qq openscap-scanner ssg-base ssg-debian >/dev/null
apt-get clean

oscap --version >/dev/null || die "oscap --version fails"
ds=/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml
[[ -s $ds ]] || die "$ds missing"
for tool in bash sleep ps find grep sed tar awk; do
    command -v "$tool" >/dev/null || die "$tool missing from the target"
done

mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' /mnt/def/repo-packages.txt | grep -v '^$')
for p in "${pkgs[@]}"; do
    apt-get install -s -y "$p" >/tmp/sim 2>&1 || { cat /tmp/sim >&2; die "apt-get install $p would fail offline"; }
done
log "all ${#pkgs[@]} rule packages installable offline"
