#!/usr/bin/env bash
# Runs inside a container of the base image, with no network, started by
# scripts/target-image.sh; the container is then exported as the SSH sandbox
# image: Debian 11 minbase + openssh-client, no package source.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "deb [trusted=yes] file:/mnt/repo ./" >/etc/apt/sources.list
apt-get update -qq
apt-get install -y -qq --no-install-recommends openssh-client >/dev/null
command -v ssh >/dev/null || { echo "assemble-sandbox: ERROR: no ssh after install" >&2; exit 1; }
: >/etc/apt/sources.list
apt-get clean
rm -rf /var/lib/apt/lists/*
echo "assemble-sandbox: $(ssh -V 2>&1)" >&2
