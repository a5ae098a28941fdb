# shellcheck shell=bash disable=SC2034
# Sourced by target-image.sh and vm-image.sh: where the cached pieces of the
# Debian 11 images live, keyed by their inputs. Both scripts must agree, so
# the keys are computed here only. Needs DEF (deploy/target-image), CACHE
# (resolved image cache) and deploy/target-image/versions.env sourced; also
# the logging both scripts share (LOGS and die from the caller).

sha() { sha256sum | cut -c1-16; }

# image_keys: sets ROOTFS_KEY/ROOTFS_TAR (debootstrap tarball), OSCAP_KEY/
# OSCAP_DIR/OSCAP_DEB (our openscap-scanner .deb), SSG_BASE_DEB,
# SSG_DEBIAN_DEB, REPO_KEY/REPO_DIR (the offline repository) and BASE_IMAGE
# (the docker-imported debootstrap tree).
image_keys() {
    ROOTFS_KEY=$(echo "$DEBIAN_SUITE $DEBOOTSTRAP_VARIANT $DEBOOTSTRAP_INCLUDE $DEBIAN_MIRROR" | sha)
    ROOTFS_TAR=$CACHE/rootfs/$DEBIAN_SUITE-$DEBOOTSTRAP_VARIANT-$ROOTFS_KEY.tar
    BASE_IMAGE=fleet-image-base:$DEBIAN_SUITE
    OSCAP_KEY=$({ echo "$OSCAP_SHA256 $OSCAP_DEB_VERSION $ROOTFS_KEY $DEBIAN_MIRROR"; cat "$DEF/build-openscap.sh"; } | sha)
    OSCAP_DIR=$CACHE/openscap/$OSCAP_KEY
    OSCAP_DEB=$OSCAP_DIR/openscap-scanner_${OSCAP_DEB_VERSION}_amd64.deb
    SSG_BASE_DEB=$CACHE/debs/$(basename -- "$SSG_BASE_URL")
    SSG_DEBIAN_DEB=$CACHE/debs/$(basename -- "$SSG_DEBIAN_URL")
    REPO_KEY=$({
        echo "$OSCAP_KEY $ROOTFS_KEY $SSG_BASE_SHA256 $SSG_DEBIAN_SHA256 $DEBIAN_MIRROR $DEBIAN_SUITE"
        cat "$DEF/repo-packages.txt" "$DEF/fetch-repo.sh"
    } | sha)
    REPO_DIR=$CACHE/repo/$REPO_KEY
}

label_of() { docker image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }

# build_network: the docker network of build containers that download: the
# bridge if it reaches the mirror, else the host's (FLEET_BUILD_NETWORK wins).
build_network() {
    if [[ -n ${FLEET_BUILD_NETWORK:-} ]]; then
        echo "$FLEET_BUILD_NETWORK"
        return
    fi
    local host=${DEBIAN_MIRROR#*://}
    host=${host%%/*}
    if docker run --rm --network bridge "$BASE_IMAGE" timeout 10 bash -c "exec 3<>/dev/tcp/$host/80" >/dev/null 2>&1; then
        echo bridge
    else
        echo host
    fi
}

# run_logged NAME CMD...: CMD's output goes to $LOGS/NAME.log; its tail is
# shown on failure.
run_logged() {
    local name=$1
    shift
    if ! "$@" >"$LOGS/$name.log" 2>&1; then
        tail -n 30 "$LOGS/$name.log" >&2
        die "step '$name' failed (full log: $LOGS/$name.log)"
    fi
}
