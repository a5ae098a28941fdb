#!/usr/bin/env bash
# Runs inside a container of fleet-image-base (the debootstrap base of `make
# target-image`), with network, started by scripts/vm-image.sh. The container's
# file system then becomes the VM's root file system (docker export), to
# which vm-image.sh adds the per-build SSH keys and /etc/hosts.
#
#   /mnt/def              deploy/vm-image (packages.txt)
#   /mnt/repo             target-image's offline repository (openscap-scanner,
#                         ssg-*, the packages rules may install)
#   /var/cache/apt/archives  a download cache kept across builds
set -euo pipefail
log() { echo "assemble-vm: $*" >&2; }
die() { echo "assemble-vm: ERROR: $*" >&2; exit 1; }
: "${DEBIAN_MIRROR:?}" "${DEBIAN_SUITE:?}"
export DEBIAN_FRONTEND=noninteractive
REPO=/srv/fleet-repo

# Nothing starts during the build (openssh-server's postinst would start sshd here).
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >/etc/apt/apt.conf.d/90fleet

# 1. systemd, the kernel, sshd from the mirror.
echo "deb $DEBIAN_MIRROR $DEBIAN_SUITE main" >/etc/apt/sources.list
rm -f /etc/apt/sources.list.d/*
apt-get update -qq
mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' /mnt/def/packages.txt | grep -v '^$')
log "installing from $DEBIAN_MIRROR: ${pkgs[*]}"
apt-get install -y -qq "${pkgs[@]}" >/dev/null
ls /boot/vmlinuz-* /boot/initrd.img-* >/dev/null 2>&1 || die "no kernel or initramfs in /boot"

# 2. The offline repository as the ONLY package source, as in the Docker target;
#    OpenSCAP and the SSG content from it.
mkdir -p "$REPO"
cp -a /mnt/repo/. "$REPO/"
cat >/etc/apt/sources.list <<SOURCES
# The VM's only package source: an offline flat repository holding the
# packages rules may install (built by scripts/target-image.sh).
deb [trusted=yes] file:$REPO ./
SOURCES
apt-get update -qq
log "installing openscap-scanner ssg-base ssg-debian from $REPO"
apt-get install -y -qq openscap-scanner ssg-base ssg-debian >/dev/null
# No apt-get clean: /var/cache/apt/archives is the build cache, mounted (not in the image).
oscap --version >/dev/null || die "oscap --version fails"
[[ -s /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml ]] || die "ssg-debian11-ds.xml missing"
mapfile -t rule_pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' /mnt/repo-packages.txt | grep -v '^$')
for p in "${rule_pkgs[@]}"; do
    apt-get install -s -y "$p" >/tmp/sim 2>&1 || { cat /tmp/sim >&2; die "apt-get install $p would fail offline"; }
done
log "all ${#rule_pkgs[@]} rule packages installable offline"

# 3. A machine: root fs on /dev/vda, DHCP on the NIC (qemu user networking),
#    sshd by key only, no timers that would change the guest behind the fleet's back.
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >/etc/fstab
cat >/etc/systemd/network/10-fleet-dhcp.network <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1
systemctl mask apt-daily.timer apt-daily-upgrade.timer systemd-networkd-wait-online.service >/dev/null 2>&1
rm -f /etc/ssh/ssh_host_*
cat >/etc/ssh/sshd_config.d/fleet.conf <<'SSHD'
# fleet VM: root by key only; the host key is generated per image build.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
ChallengeResponseAuthentication no
UseDNS no
SSHD
usermod -p '*' root
# A fresh machine-id at first boot, not one shared by every VM of this image.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /usr/sbin/policy-rc.d /.dockerenv
log "done: $(dpkg -l | grep -c '^ii') packages, kernel $(ls /boot/vmlinuz-* | sed 's|.*/vmlinuz-||')"
