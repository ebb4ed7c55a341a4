#!/bin/sh
# Builds the Debian and RPM packages of pam_totp, in two flavours: pam-totp / pam_totp
# (SQLite only) and pam-totp-postgresql / pam_totp-postgresql (also the PostgreSQL store
# for fleets, see docs/FLEET.md):
#
#   packaging/build.sh                      # all four packages (what the tests check)
#   packaging/build.sh --deb --sqlite       # only pam-totp_*.deb (what install.sh builds)
#   packaging/build.sh --rpm --postgresql   # only pam_totp-postgresql-*.rpm
#
# --deb and --rpm choose the kinds of package, --sqlite and --postgresql the flavours;
# naming neither of a pair builds both. The packages go to <target>/packages/ (the ones
# left there before are removed), where <target> is $CARGO_TARGET_DIR when set and the
# workspace's target/ otherwise. The PostgreSQL flavour is built in <target>/pg/: built
# in the same target directory, the feature would reach the SQLite-only module too.
# Installs the cargo plug-in of each kind it builds when it is missing (cargo install
# --locked: cargo-deb about 1 minute, cargo-generate-rpm 3 to 4). The .rpm also carries
# the SELinux policy module of packaging/selinux/, compiled with the policy development
# Makefile (selinux-policy-dev on Debian, selinux-policy-devel on RHEL). See
# docs/PACKAGING.md.
set -eu

deb=no rpm=no sqlite=no postgresql=no
for arg in "$@"; do
    case "$arg" in
    --deb) deb=yes ;;
    --rpm) rpm=yes ;;
    --sqlite) sqlite=yes ;;
    --postgresql) postgresql=yes ;;
    -h | --help)
        sed -n '2,19p' "$0"
        exit 0
        ;;
    *)
        echo "build.sh: unknown option $arg (see --help)" >&2
        exit 2
        ;;
    esac
done
[ "$deb" = yes ] || [ "$rpm" = yes ] || deb=yes rpm=yes
[ "$sqlite" = yes ] || [ "$postgresql" = yes ] || sqlite=yes postgresql=yes

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in
/*) ;;
*) target=$root/$target ;;
esac
pg_target=$target/pg
out=$target/packages

# The versions the packaging was verified with; one already installed is used as is.
if [ "$deb" = yes ] && ! cargo deb --version >/dev/null 2>&1; then
    echo "build.sh: installing cargo-deb 3.8.0 (about 1 minute)"
    cargo install --locked cargo-deb --version 3.8.0
fi
if [ "$rpm" = yes ] && ! cargo generate-rpm --version >/dev/null 2>&1; then
    echo "build.sh: installing cargo-generate-rpm 0.21.1 (3 to 4 minutes)"
    cargo install --locked cargo-generate-rpm --version 0.21.1
fi

# The SELinux policy module the .rpm carries, compiled with the reference policy's
# development Makefile (Debian: selinux-policy-dev; RHEL, Fedora: selinux-policy-devel,
# which compiles it against the distribution's own policy) into <dir>/release/selinux/,
# where the RPM metadata finds it for either flavour.
selinux_module() {
    makefile=/usr/share/selinux/devel/Makefile
    if [ ! -f "$makefile" ]; then
        echo "build.sh: $makefile is missing: install selinux-policy-dev (Debian, Ubuntu)" \
            "or selinux-policy-devel (RHEL, Fedora)" >&2
        exit 1
    fi
    work=$(mktemp -d)
    cp packaging/selinux/pam_totp.te packaging/selinux/pam_totp.fc \
        packaging/selinux/pam_totp.if "$work/"
    echo "build.sh: make -f $makefile pam_totp.pp"
    make -s -C "$work" -f "$makefile" pam_totp.pp
    mkdir -p "$1/release/selinux"
    cp "$work/pam_totp.pp" "$1/release/selinux/pam_totp.pp"
    rm -rf "$work"
}

# cargo-generate-rpm builds nothing, and cargo-deb is told not to: one release build
# (stripped by the profile) per flavour serves both kinds of package.
if [ "$sqlite" = yes ]; then
    echo "build.sh: cargo build --release (SQLite flavour)"
    CARGO_TARGET_DIR=$target cargo build --release -p pam_totp -p totp-admin
fi
if [ "$postgresql" = yes ]; then
    echo "build.sh: cargo build --release --features pam_totp/postgresql (in $pg_target)"
    CARGO_TARGET_DIR=$pg_target cargo build --release -p pam_totp -p totp-admin \
        --features pam_totp/postgresql
fi

mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.rpm
if [ "$deb" = yes ]; then
    # The .deb's changelog, from NEWS (cargo-deb installs it as changelog.Debian.gz).
    sh packaging/gen-changelog.sh packaging/deb/changelog
    if [ "$sqlite" = yes ]; then
        CARGO_TARGET_DIR=$target cargo deb -p pam_totp --no-build --output "$out/"
    fi
    if [ "$postgresql" = yes ]; then
        CARGO_TARGET_DIR=$pg_target cargo deb -p pam_totp --no-build --variant postgresql \
            --output "$out/"
    fi
fi
if [ "$rpm" = yes ]; then
    # Asset and scriptlet paths of the RPM metadata are relative to the workspace root.
    if [ "$sqlite" = yes ]; then
        selinux_module "$target"
        cargo generate-rpm -p pam_totp --target-dir "$target" --output "$out/"
    fi
    if [ "$postgresql" = yes ]; then
        selinux_module "$pg_target"
        cargo generate-rpm -p pam_totp --variant postgresql --target-dir "$pg_target" \
            --output "$out/"
    fi
fi

echo "packages in $out:"
ls -l "$out"/*.deb "$out"/*.rpm 2>/dev/null || true
