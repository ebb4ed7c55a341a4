# shellcheck shell=bash
# Sourced (bash) by tests/run.sh and .ci/run, as root, from the workspace root: installs
# the system packages the build, the packages and the end-to-end tests need (apt-get,
# skipped when they are all there) and puts cargo on PATH (rustup when there is none).
# The cargo plug-ins come with packaging/build.sh, fuzz/run.sh and tests/supply-chain.sh.
#
# What the build, the packages and the end-to-end tests call: rpm2cpio and cpio read the
# .rpm, sudo is one of the console tests, postgresql runs the fleet tests, openvpn and
# libpam-google-authenticator / libpam-oath the comparisons.
PACKAGES=(
    build-essential pkg-config libpam0g-dev libpam-modules libpam-runtime
    pamtester libpam-wrapper oathtool sqlite3 expect
    openssh-server openssh-client login passwd util-linux procps iproute2
    rpm rpm2cpio cpio dpkg-dev binutils libpam-google-authenticator libpam-oath valgrind
    postgresql openssl sudo lintian openvpn ca-certificates curl
)
# The QR screen tests (tests/tests/qr_screens.rs): an X server, xterm with a TrueType
# and a bitmap font, screenshots (import) and a QR code reader (zbarimg).
PACKAGES+=(xvfb xterm fonts-dejavu-core xfonts-base imagemagick zbar-tools)
# The SELinux policy module of the .rpm (packaging/build.sh, tests/tests/rhel.rs):
# compiled with the reference policy's development Makefile, installed with semodule
# into a copy of the reference policy's store, queried with sesearch and seinfo.
PACKAGES+=(selinux-policy-dev selinux-policy-default semodule-utils policycoreutils setools)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}\n' "$package" 2>/dev/null | grep -q ' installed$' ||
        missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
# shellcheck source=packaging/rust-env.sh
. packaging/rust-env.sh
