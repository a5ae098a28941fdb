#!/usr/bin/env bash
# Runs inside a throw-away Debian 11 container started by scripts/target-image.sh:
# builds OpenSCAP from the source tarball in /src and writes a real .deb named
# openscap-scanner (oscap CLI + libopenscap + schemas) to /out.
#
# Debian 11 ships no openscap-scanner, so we build one. Only what `oscap xccdf
# eval` needs on a Debian target is built: no bindings, docs, tests or
# container/VM wrappers. The OVAL probes are linked into libopenscap; the build
# log lists which ones are enabled.
#
#   /src/$OSCAP_TARBALL   source tarball (sha256 verified by the caller)
#   /out                  the .deb lands here
#   OSCAP_DEB_VERSION     Version: of the package (e.g. 1.4.2-fleet1)
set -euo pipefail
log() { echo "build-openscap: $*" >&2; }
die() { echo "build-openscap: ERROR: $*" >&2; exit 1; }

: "${OSCAP_TARBALL:?}" "${OSCAP_DEB_VERSION:?}" "${DEBIAN_MIRROR:?}" "${DEBIAN_SUITE:?}"
export DEBIAN_FRONTEND=noninteractive

# Build dependencies, minimal: C compiler only (no g++), the libraries the
# probes need for Debian checks (dbus: systemdunit*, blkid: partition,
# cap: process58, acl: file ACLs, yaml: yamlfilecontent, gcrypt: filehash58).
BUILD_DEPS=(
    cmake make gcc libc6-dev pkg-config dpkg-dev file
    libxml2-dev libxslt1-dev libxmlsec1-dev libssl-dev libpcre2-dev
    libcurl4-openssl-dev libgcrypt20-dev libbz2-dev
    libacl1-dev libblkid-dev libcap-dev libdbus-1-dev libyaml-dev libpopt-dev
)
echo "deb $DEBIAN_MIRROR $DEBIAN_SUITE main" >/etc/apt/sources.list
log "apt-get install ${#BUILD_DEPS[@]} build dependencies"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${BUILD_DEPS[@]}" >/dev/null

log "unpacking $OSCAP_TARBALL"
mkdir -p /build
tar -xJf "/src/$OSCAP_TARBALL" -C /build
srcdir=$(find /build -mindepth 1 -maxdepth 1 -type d | head -n 1)
[[ -f $srcdir/CMakeLists.txt ]] || die "no CMakeLists.txt in $srcdir"
# Pure C: do not require a C++ compiler just because project() defaults to C+CXX.
sed -i 's/^project("openscap")$/project("openscap" C)/' "$srcdir/CMakeLists.txt"

log "cmake configure"
mkdir -p /build/out
cd /build/out
cmake "$srcdir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
    -DCMAKE_INSTALL_LIBDIR=lib/x86_64-linux-gnu -DCMAKE_INSTALL_SYSCONFDIR=/etc \
    -DENABLE_PYTHON3=OFF -DENABLE_PERL=OFF -DENABLE_DOCS=OFF -DENABLE_TESTS=OFF \
    -DENABLE_VALGRIND=OFF -DENABLE_SCE=OFF \
    -DENABLE_OSCAP_UTIL=ON -DENABLE_OSCAP_UTIL_DOCKER=OFF -DENABLE_OSCAP_UTIL_AS_RPM=OFF \
    -DENABLE_OSCAP_UTIL_SSH=OFF -DENABLE_OSCAP_UTIL_VM=OFF -DENABLE_OSCAP_UTIL_PODMAN=OFF \
    -DENABLE_OSCAP_UTIL_IM=OFF -DENABLE_OSCAP_UTIL_CHROOT=OFF -DENABLE_OSCAP_UTIL_AUTOTAILOR=OFF \
    -DENABLE_OSCAP_REMEDIATE_SERVICE=OFF \
    -DOPENSCAP_PROBE_LINUX_RPMINFO=OFF -DOPENSCAP_PROBE_LINUX_RPMVERIFY=OFF \
    -DOPENSCAP_PROBE_LINUX_RPMVERIFYFILE=OFF -DOPENSCAP_PROBE_LINUX_RPMVERIFYPACKAGE=OFF \
    >cmake.log 2>&1 || { tail -n 40 cmake.log >&2; die "cmake configure failed"; }
grep -E '^-- *(OpenSCAP|Probe|  )|probe' cmake.log | grep -iE 'probe' >&2 || true
for probe in DPKGINFO TEXTFILECONTENT54 FILE SYSCTL PARTITION SYSTEMDUNITPROPERTY; do
    grep -qE "^OPENSCAP_PROBE_[A-Z]+_${probe}:BOOL=ON" CMakeCache.txt ||
        die "probe $probe is not enabled (see cmake output above)"
done

log "make -j$(nproc)"
make -j"$(nproc)" >make.log 2>&1 || { tail -n 60 make.log >&2; die "make failed"; }

pkg=/build/pkg/openscap-scanner
make install DESTDIR="$pkg" >install.log 2>&1 || { tail -n 40 install.log >&2; die "make install failed"; }
rm -rf "$pkg/usr/include" "$pkg/usr/lib/x86_64-linux-gnu/pkgconfig" "$pkg/usr/share/man" \
    "$pkg/usr/share/doc"
find "$pkg" -name '*.so*' -type f -exec strip --strip-unneeded {} +
strip "$pkg/usr/bin/oscap"

# Depends: derived from the ELF files' needs, like a Debian package build does.
cd /build/pkg
mkdir -p debian
printf 'Source: openscap\n\nPackage: openscap-scanner\nArchitecture: amd64\n' >debian/control
mapfile -t elfs < <(find "$pkg/usr/lib" -name 'libopenscap.so.*' -type f)
dpkg-shlibdeps -O --ignore-missing-info -l"$pkg/usr/lib/x86_64-linux-gnu" -e "$pkg/usr/bin/oscap" \
    "${elfs[@]/#/-e}" >substvars 2>shlibdeps.log ||
    { cat shlibdeps.log >&2; die "dpkg-shlibdeps failed"; }
depends=$(sed -n 's/^shlibs:Depends=//p' substvars)
[[ -n $depends ]] || die "dpkg-shlibdeps found no dependencies"

mkdir -p "$pkg/DEBIAN"
size=$(du -sk "$pkg/usr" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: openscap-scanner
Source: openscap
Version: $OSCAP_DEB_VERSION
Architecture: amd64
Maintainer: fleet <fleet@localhost>
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Homepage: https://www.open-scap.org/
Description: OpenSCAP scanner (oscap), built from source for Debian 11 by the fleet
 Debian 11 ships no openscap-scanner; this package holds the oscap CLI,
 libopenscap with its OVAL probes, and the SCAP schemas, built from the
 upstream $OSCAP_TARBALL by scripts/target-image.sh.
CONTROL
echo 'activate-noawait ldconfig' >"$pkg/DEBIAN/triggers"
deb=/out/openscap-scanner_${OSCAP_DEB_VERSION}_amd64.deb
dpkg-deb --root-owner-group -Zxz -b "$pkg" "$deb" >/dev/null
log "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB), Depends: $depends"
