#!/usr/bin/env bash
# Build the Debian 11 virtual machine image of qemu targets (issue 24), from
# nothing but Debian packages, and boot it once under qemu as a smoke check.
#
#   $OUT/disk.qcow2         root fs (ext4, no partition table: root=/dev/vda),
#                           4 GiB virtual: the target-image debootstrap base +
#                           systemd, linux-image-cloud-amd64, openssh-server,
#                           dbus, the fleet's openscap-scanner, ssg-base,
#                           ssg-debian and the offline repo /srv/fleet-repo
#   $OUT/vmlinuz, initrd.img   the image's kernel and initramfs (-kernel/-initrd)
#   $OUT/id_ed25519[.pub]   access key of root@guest (generated per build, 600)
#   $OUT/known_hosts        the guest's host key, under the alias fleet-vm
#   $OUT/boot.args          the kernel command line
#   $OUT/inputs             the input hash of this build
#
# Reuses target-image's cache (debootstrap base image, openscap .deb, offline
# repo; built first by scripts/target-image.sh when missing). Skipped (fast)
# when $OUT/inputs matches the hash of this script, scripts/lib/image-keys.sh,
# deploy/vm-image/ and the keys of those pieces.
#
#   FORCE=1                 rebuild even when up to date
#   FLEET_STATE_DIR         state dir (default: <repo root>/.fleet)
#   FLEET_IMAGE_CACHE       target-image's cache (default: $FLEET_STATE_DIR/image-cache)
#   FLEET_VM_IMAGE_DIR      output (default: $FLEET_STATE_DIR/vm-image)
#   FLEET_BUILD_NETWORK     docker network of the build container (see target-image.sh)
set -euo pipefail

t0=$(date +%s%N)
log() { echo "vm-image: $*" >&2; }
die() { echo "vm-image: ERROR: $*" >&2; exit 1; }
elapsed() { local ms=$((($(date +%s%N) - t0) / 1000000)); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(dirname -- "$SCRIPT_DIR")
DEF=$REPO_ROOT/deploy/target-image
VMDEF=$REPO_ROOT/deploy/vm-image
STATE=${FLEET_STATE_DIR:-$REPO_ROOT/.fleet}
CACHE=${FLEET_IMAGE_CACHE:-$STATE/image-cache}
OUT=${FLEET_VM_IMAGE_DIR:-$STATE/vm-image}
FORCE=${FORCE:-0}
DISK_SIZE=4G
[[ -f $DEF/versions.env && -f $VMDEF/packages.txt ]] || die "deploy/target-image or deploy/vm-image missing: is this a complete checkout?"
# shellcheck source=deploy/target-image/versions.env
source "$DEF/versions.env"
# shellcheck source=scripts/lib/image-keys.sh
source "$SCRIPT_DIR/lib/image-keys.sh"

mkdir -p -- "$OUT" "$CACHE"
OUT=$(cd -- "$OUT" && pwd -P)
CACHE=$(cd -- "$CACHE" && pwd -P)
image_keys
INPUTS=$({
    cat -- "${BASH_SOURCE[0]}" "$SCRIPT_DIR/lib/image-keys.sh"
    for f in "$VMDEF"/*; do printf '\n== %s\n' "$(basename -- "$f")"; cat -- "$f"; done
    echo "$ROOTFS_KEY $OSCAP_KEY $REPO_KEY $SSG_BASE_SHA256 $SSG_DEBIAN_SHA256"
} | sha)
ARTIFACTS=(disk.qcow2 vmlinuz initrd.img id_ed25519 id_ed25519.pub known_hosts boot.args)

exec 9>"$OUT/.lock"
if ! flock -n 9; then
    log "another vm-image build holds $OUT/.lock; waiting for it"
    flock -w 3600 9 || die "still locked after 1 h: is a build stuck? (fuser -v $OUT/.lock)"
fi
up_to_date() {
    [[ $FORCE != 1 && -f $OUT/inputs && $(cat "$OUT/inputs") == "$INPUTS" ]] || return 1
    local a
    for a in "${ARTIFACTS[@]}"; do [[ -s $OUT/$a ]] || return 1; done
}
if up_to_date; then
    echo "vm-image: $OUT/disk.qcow2 up to date ($(elapsed))"
    exit 0
fi
log "building $OUT/disk.qcow2 (inputs $INPUTS)"
LOGS=$OUT/logs
mkdir -p -- "$LOGS"

# ---------------------------------------------------------------- host tools ---
# shellcheck source=scripts/lib/qemu.sh
source "$SCRIPT_DIR/lib/qemu.sh"
install_host_packages() {
    local pkgs=()
    command -v mkfs.ext4 >/dev/null 2>&1 || pkgs+=(e2fsprogs)
    command -v ssh-keygen >/dev/null 2>&1 || pkgs+=(openssh-client)
    if ((${#pkgs[@]})); then
        [[ $(id -u) -eq 0 ]] || die "missing packages (${pkgs[*]}): run as root so this script can apt-get install them"
        log "installing host packages: ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$LOGS/apt.log" 2>&1 ||
            die "apt-get update failed (see $LOGS/apt.log): check access to the Debian mirrors"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$LOGS/apt.log" 2>&1 ||
            die "apt-get install ${pkgs[*]} failed (see $LOGS/apt.log)"
    fi
    ensure_qemu "$LOGS/apt.log"
}
install_host_packages
command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (the image is assembled in a container): start it and rerun"
[[ $(id -u) -eq 0 ]] || die "run as root: the root fs is extracted with its owners"

# ----------------------------------------- 1. target-image's cached pieces ---
step_t=$(date +%s)
pieces_ready() {
    [[ -f $ROOTFS_TAR && -f $OSCAP_DEB && -f $REPO_DIR/Packages && -f $SSG_BASE_DEB && -f $SSG_DEBIAN_DEB &&
        $(label_of "$BASE_IMAGE" fleet.rootfs) == "$ROOTFS_KEY" ]]
}
if pieces_ready; then
    log "1/4 target-image pieces cached (base $ROOTFS_KEY, openscap $OSCAP_KEY, repo $REPO_KEY)"
else
    log "1/4 target-image pieces missing from $CACHE: running scripts/target-image.sh (FORCE=1)"
    FORCE=1 FLEET_STATE_DIR=$STATE FLEET_IMAGE_CACHE=$CACHE "$SCRIPT_DIR/target-image.sh" ||
        die "scripts/target-image.sh failed"
    pieces_ready || die "target-image.sh ran but $REPO_DIR or $OSCAP_DEB is still missing"
fi

TMP=$(mktemp -d "$OUT/.build.XXXXXX")
CTR=fleet-vm-image-build
QEMU_PID=
cleanup() {
    [[ -n $QEMU_PID ]] && kill "$QEMU_PID" 2>/dev/null || true
    docker rm -f "$CTR" >/dev/null 2>&1 || true
    rm -rf --one-file-system -- "$TMP"
}
trap cleanup EXIT
docker rm -f "$CTR" >/dev/null 2>&1 || true


# ------------------------------------------------------ 2. the root fs tree ---
step_t=$(date +%s)
NET=$(build_network)
mkdir -p -- "$CACHE/apt-archives-vm/partial"
log "2/4 installing systemd, kernel, sshd, OpenSCAP in a $DEBIAN_SUITE container (network $NET; log: $LOGS/assemble.log)"
run_logged assemble docker run --name "$CTR" --network "$NET" \
    -e DEBIAN_MIRROR="$DEBIAN_MIRROR" -e DEBIAN_SUITE="$DEBIAN_SUITE" \
    -v "$VMDEF:/mnt/def:ro" -v "$REPO_DIR:/mnt/repo:ro" -v "$DEF/repo-packages.txt:/mnt/repo-packages.txt:ro" \
    -v "$CACHE/apt-archives-vm:/var/cache/apt/archives" \
    "$BASE_IMAGE" bash /mnt/def/assemble-vm.sh
grep '^assemble-vm: done' "$LOGS/assemble.log" | sed 's/^assemble-vm: /vm-image:     /' >&2 || true
ROOT=$TMP/root
mkdir -p -- "$ROOT"
docker export "$CTR" | tar -x --numeric-owner -C "$ROOT" || die "docker export of $CTR failed"
docker rm -f "$CTR" >/dev/null
# Docker manages these in a container: write the VM's own.
rm -f -- "$ROOT/.dockerenv"
echo fleet-vm >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tfleet-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
: >"$ROOT/etc/resolv.conf"

# Per-build keys: the guest's host key (only its public half leaves the image)
# and root's access key.
ssh-keygen -q -t ed25519 -N '' -C fleet-vm-host -f "$ROOT/etc/ssh/ssh_host_ed25519_key"
chmod 600 "$ROOT/etc/ssh/ssh_host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -C "fleet-vm-access-$INPUTS" -f "$TMP/id_ed25519"
chmod 600 "$TMP/id_ed25519"
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$TMP/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
echo "fleet-vm $(cut -d' ' -f1,2 "$ROOT/etc/ssh/ssh_host_ed25519_key.pub")" >"$TMP/known_hosts"
kernel=$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$ROOT/boot/initrd.img-${kernel##*/vmlinuz-}
[[ -f $kernel && -f $initrd ]] || die "no kernel/initramfs pair in the image's /boot"
cp -- "$kernel" "$TMP/vmlinuz"
cp -- "$initrd" "$TMP/initrd.img"
echo "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet" >"$TMP/boot.args"
log "    root fs: $(du -sm "$ROOT" | cut -f1) MiB, kernel ${kernel##*/vmlinuz-}, in $(($(date +%s) - step_t))s"

# ------------------------------------------------------------- 3. the disk ---
step_t=$(date +%s)
log "3/4 mkfs.ext4 -d (no loop device) and qemu-img convert -O qcow2 ($DISK_SIZE virtual)"
truncate -s "$DISK_SIZE" "$TMP/disk.raw"
run_logged mkfs mkfs.ext4 -F -L fleet-root -d "$ROOT" "$TMP/disk.raw"
rm -rf --one-file-system -- "$ROOT"
run_logged qemu-img qemu-img convert -O qcow2 "$TMP/disk.raw" "$TMP/disk.qcow2"
rm -f -- "$TMP/disk.raw"
log "    disk.qcow2: $(du -m "$TMP/disk.qcow2" | cut -f1) MiB in $(($(date +%s) - step_t))s"

# ------------------------------------------------------ 4. boot smoke check ---
# Boots the new disk through a throw-away overlay (the image stays as built):
# TCG unless /dev/kvm runs it (not here: PVM), 1 GiB, 1 vCPU, user networking
# restricted to one hostfwd to the guest's sshd.
step_t=$(date +%s)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
qemu-img create -q -f qcow2 -b "$TMP/disk.qcow2" -F qcow2 "$TMP/smoke.qcow2"
log "4/4 smoke check: qemu TCG boot, ssh on 127.0.0.1:$PORT (serial log: $LOGS/smoke-serial.log)"
qemu-system-x86_64 -accel tcg -m 1024 -smp 1 -nodefaults -display none -no-reboot \
    -kernel "$TMP/vmlinuz" -initrd "$TMP/initrd.img" -append "$(cat "$TMP/boot.args")" \
    -drive "file=$TMP/smoke.qcow2,if=virtio,format=qcow2" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=n0 \
    -serial "file:$LOGS/smoke-serial.log" >"$LOGS/smoke-qemu.log" 2>&1 &
QEMU_PID=$!
gssh() {
    ssh -q -i "$TMP/id_ed25519" -p "$PORT" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10 \
        -o HostKeyAlias=fleet-vm -o UserKnownHostsFile="$TMP/known_hosts" -o StrictHostKeyChecking=yes \
        root@127.0.0.1 "$@"
}
smoke_fail() {
    tail -n 20 "$LOGS/smoke-serial.log" >&2 || true
    cat "$LOGS/smoke-qemu.log" >&2 || true
    die "smoke check: $* (serial log: $LOGS/smoke-serial.log)"
}
deadline=$(($(date +%s) + 300))
until gssh true 2>/dev/null; do
    kill -0 "$QEMU_PID" 2>/dev/null || smoke_fail "qemu exited before sshd answered"
    (($(date +%s) < deadline)) || smoke_fail "no SSH answer with the generated key within 300 s"
    sleep 2
done
boot_s=$(($(date +%s) - step_t))
oscap_version=$(gssh 'oscap --version | head -n 1') || smoke_fail "oscap --version fails in the guest"
state=$(gssh 'timeout 120 systemctl is-system-running --wait' 2>/dev/null) || true
[[ $state == running || $state == degraded ]] ||
    smoke_fail "systemctl is-system-running says '$state' ($(gssh 'systemctl --failed --no-legend' 2>&1 | tr '\n' ';'))"
failed=$(gssh 'systemctl --failed --no-legend --plain | cut -d" " -f1 | tr "\n" " "' 2>/dev/null) || true
gssh '[ -s /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml ] && [ -f /srv/fleet-repo/Packages ]' ||
    smoke_fail "SSG content or /srv/fleet-repo missing in the guest"
gssh 'systemctl poweroff' >/dev/null 2>&1 || true
for _ in $(seq 1 60); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
if kill -0 "$QEMU_PID" 2>/dev/null; then
    kill "$QEMU_PID"
    die "smoke check: the guest did not power off within 60 s"
fi
wait "$QEMU_PID" || true
QEMU_PID=
log "    guest: $oscap_version; systemd $state${failed:+ (failed: $failed)}; ssh after ${boot_s}s; powered off after $(($(date +%s) - step_t))s"

# ------------------------------------------------------------- publish ---
rm -f -- "$TMP/smoke.qcow2"
for a in "${ARTIFACTS[@]}"; do
    mv -f -- "$TMP/$a" "$OUT/$a"
done
chmod 600 "$OUT/id_ed25519"
echo "$INPUTS" >"$OUT/inputs"
echo "vm-image: $OUT/disk.qcow2 ($(du -m "$OUT/disk.qcow2" | cut -f1) MiB, kernel $(file -b "$OUT/vmlinuz" 2>/dev/null | grep -o 'version [^ ]*' || echo vmlinuz)) built in $(elapsed); smoke boot to ssh ${boot_s}s (tcg), systemd $state"
