#!/usr/bin/env bash
# Build the Docker images the fleet runs rules against (DESIGN T5), without a
# registry: debootstrap + `docker import`.
#
#   fleet-target:bullseye   Debian 11 + openscap-scanner (built from source),
#                           ssg-base, ssg-debian, and an offline package repo
#                           /srv/fleet-repo (its only apt source) holding the
#                           packages rules may install, with their closure.
#   fleet-sandbox:bullseye  Debian 11 + openssh-client: the SSH jump sandbox.
#
# Pinned inputs live in deploy/target-image/. Skipped (fast) when the images
# carry the label fleet.inputs=<hash of this script and deploy/target-image/>.
#
#   FORCE=1                 rebuild even when the images are up to date
#   FLEET_STATE_DIR         state dir (default: <repo root>/.fleet)
#   FLEET_IMAGE_CACHE       artifact cache (default: $FLEET_STATE_DIR/image-cache):
#                           rootfs tarball, sources, the openscap .deb, repo .debs
#   FLEET_BUILD_NETWORK     docker network of the build containers that
#                           download (default: bridge if it reaches the mirror,
#                           else host)
set -euo pipefail

t0=$(date +%s%N)
log() { echo "target-image: $*" >&2; }
die() { echo "target-image: ERROR: $*" >&2; exit 1; }
elapsed() { local ms=$((($(date +%s%N) - t0) / 1000000)); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(dirname -- "$SCRIPT_DIR")
DEF=$REPO_ROOT/deploy/target-image
STATE=${FLEET_STATE_DIR:-$REPO_ROOT/.fleet}
CACHE=${FLEET_IMAGE_CACHE:-$STATE/image-cache}
FORCE=${FORCE:-0}
[[ -f $DEF/versions.env ]] || die "$DEF/versions.env missing: is this a complete checkout?"
# shellcheck source=deploy/target-image/versions.env
source "$DEF/versions.env"
# shellcheck source=scripts/lib/image-keys.sh
source "$SCRIPT_DIR/lib/image-keys.sh"

# Everything that defines the images: this script, its keys and deploy/target-image/.
INPUTS=$({
    cat -- "${BASH_SOURCE[0]}" "$SCRIPT_DIR/lib/image-keys.sh"
    for f in "$DEF"/*; do printf '\n== %s\n' "$(basename -- "$f")"; cat -- "$f"; done
} | sha)

command -v docker >/dev/null 2>&1 || die "docker is not installed: install Docker Engine (docker.io) and rerun"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon: start it (systemctl start docker) or run as a user in group docker"

# One build at a time per cache (the build containers have fixed names); a
# second caller waits, then finds the images up to date.
mkdir -p -- "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    log "another target-image build holds $CACHE/.lock; waiting for it"
    flock -w 3600 9 || die "still locked after 1 h: is a build stuck? (fuser -v $CACHE/.lock)"
fi

if [[ $FORCE != 1 && $(label_of "$TARGET_IMAGE" fleet.inputs) == "$INPUTS" &&
    $(label_of "$SANDBOX_IMAGE" fleet.inputs) == "$INPUTS" ]]; then
    echo "target-image: $TARGET_IMAGE and $SANDBOX_IMAGE up to date ($(elapsed))"
    exit 0
fi
log "building $TARGET_IMAGE and $SANDBOX_IMAGE (inputs $INPUTS; cache $CACHE)"

# ---------------------------------------------------------------- host tools ---
pkgs=()
command -v debootstrap >/dev/null 2>&1 || pkgs+=(debootstrap)
command -v dpkg-scanpackages >/dev/null 2>&1 || pkgs+=(dpkg-dev)
command -v curl >/dev/null 2>&1 || pkgs+=(curl)
command -v xz >/dev/null 2>&1 || pkgs+=(xz-utils)
if ((${#pkgs[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages (${pkgs[*]}): run as root so this script can apt-get install them"
    log "installing host packages: ${pkgs[*]}"
    mkdir -p -- "$STATE"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$STATE/apt.log" 2>&1 ||
        die "apt-get update failed (see $STATE/apt.log): check access to the Debian mirrors"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$STATE/apt.log" 2>&1 ||
        die "apt-get install ${pkgs[*]} failed (see $STATE/apt.log)"
fi

mkdir -p -- "$CACHE"/{rootfs,src,debs,openscap,repo,apt-archives,logs,tmp}
CACHE=$(cd -- "$CACHE" && pwd -P)
LOGS=$CACHE/logs
image_keys
CONTAINERS=(fleet-image-openscap fleet-image-fetch-repo fleet-image-target fleet-image-sandbox)
TMP=$(mktemp -d "$CACHE/tmp/build.XXXXXX")
cleanup() {
    docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
    # A debootstrap interrupted mid-way can leave /proc etc. mounted in its tree.
    local m
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(grep -o " $TMP/[^ ]*" /proc/mounts | sort -r)
    rm -rf --one-file-system -- "$TMP"
}
trap cleanup EXIT
docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true


# fetch URL SHA256 DEST: download once, verify always.
fetch() {
    local url=$1 want=$2 dest=$3
    if [[ ! -f $dest ]] || [[ $(sha256sum <"$dest" | cut -d' ' -f1) != "$want" ]]; then
        log "downloading $url"
        curl -fsSL --retry 3 -o "$dest.part" "$url" || die "download of $url failed: check access to deb.debian.org"
        mv -f -- "$dest.part" "$dest"
    fi
    [[ $(sha256sum <"$dest" | cut -d' ' -f1) == "$want" ]] ||
        die "$dest does not have the pinned sha256 $want (upstream changed? update deploy/target-image/versions.env)"
}

# ------------------------------------------------------------ 1. base rootfs ---
step_t=$(date +%s)
if [[ ! -f $ROOTFS_TAR ]]; then
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root: rerun as root"
    log "1/5 debootstrap --variant=$DEBOOTSTRAP_VARIANT --include=$DEBOOTSTRAP_INCLUDE $DEBIAN_SUITE (a few minutes; log: $LOGS/debootstrap.log)"
    run_logged debootstrap debootstrap --variant="$DEBOOTSTRAP_VARIANT" --include="$DEBOOTSTRAP_INCLUDE" \
        "$DEBIAN_SUITE" "$TMP/rootfs" "$DEBIAN_MIRROR"
    rm -rf "$TMP"/rootfs/var/cache/apt/archives/*.deb "$TMP"/rootfs/var/lib/apt/lists/* "$TMP"/rootfs/var/log/bootstrap.log
    tar --numeric-owner --one-file-system -C "$TMP/rootfs" -cf "$ROOTFS_TAR.part" . ||
        die "could not write $ROOTFS_TAR"
    mv -f -- "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf --one-file-system -- "$TMP/rootfs"
else
    log "1/5 debootstrap rootfs cached ($(basename -- "$ROOTFS_TAR"))"
fi
if [[ $(label_of "$BASE_IMAGE" fleet.rootfs) != "$ROOTFS_KEY" ]]; then
    log "    docker import $BASE_IMAGE"
    docker import --change "LABEL fleet.rootfs=$ROOTFS_KEY" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null || die "docker import of $ROOTFS_TAR failed"
fi
log "    base ready in $(($(date +%s) - step_t))s"

NET=

# ------------------------------- 2. offline repo and 3. openscap .deb, in parallel ---
# The repo's rule packages are resolved and downloaded (network-bound) while
# OpenSCAP compiles (CPU-bound); fetch-repo.sh waits for /extra/.ready before
# it resolves the closure of openscap-scanner and ssg-*.
fetch_pid=
repo_t=$(date +%s)
if [[ ! -f $REPO_DIR/Packages ]]; then
    NET=${NET:-$(build_network)}
    log "2/5 resolving and downloading the offline repo closure in the background (network $NET; log: $LOGS/fetch-repo.log)"
    mkdir -p -- "$TMP/extra" "$TMP/repo"
    docker run --rm --name fleet-image-fetch-repo --network "$NET" \
        -e DEBIAN_MIRROR="$DEBIAN_MIRROR" -e DEBIAN_SUITE="$DEBIAN_SUITE" \
        -v "$DEF/fetch-repo.sh:/fetch-repo.sh:ro" -v "$DEF/repo-packages.txt:/packages.txt:ro" \
        -v "$TMP/extra:/extra:ro" -v "$CACHE/apt-archives:/archives" -v "$TMP/repo:/repo" \
        "$BASE_IMAGE" bash /fetch-repo.sh >"$LOGS/fetch-repo.log" 2>&1 &
    fetch_pid=$!
else
    log "2/5 offline repo cached ($REPO_KEY: $(grep -c '^Package:' "$REPO_DIR/Packages") packages)"
fi

step_t=$(date +%s)
if [[ ! -f $OSCAP_DEB ]]; then
    OSCAP_TARBALL=$(basename -- "$OSCAP_URL")
    fetch "$OSCAP_URL" "$OSCAP_SHA256" "$CACHE/src/$OSCAP_TARBALL"
    NET=${NET:-$(build_network)}
    log "3/5 building OpenSCAP $OSCAP_DEB_VERSION from source in a $DEBIAN_SUITE container (network $NET; several minutes; log: $LOGS/openscap.log)"
    mkdir -p -- "$TMP/openscap"
    run_logged openscap docker run --rm --name fleet-image-openscap --network "$NET" \
        -e OSCAP_TARBALL="$OSCAP_TARBALL" -e OSCAP_DEB_VERSION="$OSCAP_DEB_VERSION" \
        -e DEBIAN_MIRROR="$DEBIAN_MIRROR" -e DEBIAN_SUITE="$DEBIAN_SUITE" \
        -v "$CACHE/src:/src:ro" -v "$DEF/build-openscap.sh:/build-openscap.sh:ro" -v "$TMP/openscap:/out" \
        "$BASE_IMAGE" bash /build-openscap.sh
    grep -E '^build-openscap: built' "$LOGS/openscap.log" | sed 's/^/    /' >&2 || true
    mkdir -p -- "$OSCAP_DIR"
    mv -f -- "$TMP/openscap/$(basename -- "$OSCAP_DEB")" "$OSCAP_DEB" || die "the OpenSCAP build produced no $(basename -- "$OSCAP_DEB")"
    log "    openscap-scanner built in $(($(date +%s) - step_t))s"
else
    log "3/5 openscap-scanner .deb cached ($OSCAP_KEY)"
fi
fetch "$SSG_BASE_URL" "$SSG_BASE_SHA256" "$SSG_BASE_DEB"
fetch "$SSG_DEBIAN_URL" "$SSG_DEBIAN_SHA256" "$SSG_DEBIAN_DEB"

if [[ -n $fetch_pid ]]; then
    cp -- "$OSCAP_DEB" "$SSG_BASE_DEB" "$SSG_DEBIAN_DEB" "$TMP/extra/"
    touch "$TMP/extra/.ready"
    if ! wait "$fetch_pid"; then
        tail -n 30 "$LOGS/fetch-repo.log" >&2
        die "step 'fetch-repo' failed (full log: $LOGS/fetch-repo.log)"
    fi
    (cd "$TMP/repo" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null) ||
        die "dpkg-scanpackages failed in $TMP/repo"
    rm -rf -- "$REPO_DIR"
    mv -- "$TMP/repo" "$REPO_DIR"
    log "    repo: $(grep -c '^Package:' "$REPO_DIR/Packages") packages, $(du -sm "$REPO_DIR" | cut -f1) MiB, ready $(($(date +%s) - repo_t))s after it started"
fi

# ----------------------------------------------------------- 4. the images ---
# export_as CONTAINER IMAGE [--change ...]: flatten a stopped container into a labelled image.
export_as() {
    local ctr=$1 image=$2 old
    shift 2
    old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    docker export "$ctr" | docker import "$@" \
        --change "LABEL fleet.inputs=$INPUTS" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV DEBIAN_FRONTEND=noninteractive' \
        --change 'CMD ["sleep", "infinity"]' - "$image" >/dev/null || die "docker export/import of $ctr as $image failed"
    docker rm -f "$ctr" >/dev/null
    # The previous build of this tag would linger as a dangling image.
    if [[ -n $old && $old != "$(docker image inspect -f '{{.Id}}' "$image")" ]]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

step_t=$(date +%s)
log "4/5 assembling $TARGET_IMAGE and $SANDBOX_IMAGE offline, in parallel (logs: $LOGS/{target,sandbox}.log)"
run_logged sandbox docker run --name fleet-image-sandbox --network none \
    -v "$DEF:/mnt/def:ro" -v "$REPO_DIR:/mnt/repo:ro" "$BASE_IMAGE" bash /mnt/def/assemble-sandbox.sh &
sandbox_pid=$!
run_logged target docker run --name fleet-image-target --network none \
    -v "$DEF:/mnt/def:ro" -v "$REPO_DIR:/mnt/repo:ro" "$BASE_IMAGE" bash /mnt/def/assemble-target.sh
wait "$sandbox_pid" || die "assembling $SANDBOX_IMAGE failed (log: $LOGS/sandbox.log)"
log "    assembled in $(($(date +%s) - step_t))s"

step_t=$(date +%s)
log "5/5 docker export | docker import, smoke test"
export_as fleet-image-target "$TARGET_IMAGE" --change 'ENTRYPOINT ["/usr/local/sbin/fleet-target-entrypoint"]'
export_as fleet-image-sandbox "$SANDBOX_IMAGE"
# Smoke test: seen as a machine, the dpkginfo probe works, auditd is not installed.
rule=xccdf_org.ssgproject.content_rule_package_audit_installed
verdict=$(docker run --rm --network none "$TARGET_IMAGE" oscap xccdf eval --skip-valid \
    --profile xccdf_org.ssgproject.content_profile_standard --rule "$rule" \
    /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml 2>&1 | sed -n 's/^Result[[:space:]]*//p') || true
[[ $verdict == fail ]] || die "smoke test: $rule is '$verdict' in $TARGET_IMAGE, expected fail"
docker run --rm --network none "$SANDBOX_IMAGE" ssh -V >/dev/null 2>&1 || die "smoke test: ssh -V fails in $SANDBOX_IMAGE"
log "    images ready in $(($(date +%s) - step_t))s"

size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%d MB", $1 / 1000000}'; }
echo "target-image: $TARGET_IMAGE ($(size "$TARGET_IMAGE")) and $SANDBOX_IMAGE ($(size "$SANDBOX_IMAGE")) built in $(elapsed)"
