#!/bin/sh
# ENTRYPOINT of fleet-target (installed as /usr/local/sbin/fleet-target-entrypoint).
# The target stands in for a machine, but the SCAP Security Guide marks ~70
# rules "machine only" and decides "container" from the files /.dockerenv and
# /run/.containerenv, which Docker/Podman create in every container: those
# rules would all be notapplicable. Remove the markers, then run the command
# (CMD: sleep infinity).
rm -f /.dockerenv /run/.containerenv 2>/dev/null || true
exec "$@"
