# shellcheck shell=bash
# ensure_qemu LOGFILE: qemu-system-x86_64 and qemu-img, installed if missing.
# On bookworm both come from bookworm-backports: bookworm's qemu-system-x86
# 7.2 conflicts with the backports qemu-utils these machines carry. The
# backports suite is enabled for this install only (its packages are never
# picked unless asked for). Needs the caller's log() and die().
ensure_qemu() {
    local logfile=$1 want=() target=() codename
    command -v qemu-img >/dev/null 2>&1 || want+=(qemu-utils)
    command -v qemu-system-x86_64 >/dev/null 2>&1 || want+=(qemu-system-x86)
    ((${#want[@]})) || return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${want[*]}: run as root so it can be installed with apt-get"
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [[ $codename == bookworm ]]; then
        if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            log "enabling bookworm-backports (/etc/apt/sources.list.d/fleet-bookworm-backports.list; its packages are only installed when asked for)"
            echo 'deb http://deb.debian.org/debian bookworm-backports main' >/etc/apt/sources.list.d/fleet-bookworm-backports.list
        fi
        target=(-t bookworm-backports)
    fi
    log "installing ${want[*]}${target:+ from bookworm-backports}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$logfile" 2>&1 ||
        die "apt-get update failed (see $logfile): check access to the Debian mirrors"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${target[@]}" "${want[@]}" >>"$logfile" 2>&1 ||
        die "apt-get install ${target[*]} ${want[*]} failed (see $logfile)"
    command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 still missing after install (see $logfile)"
}
