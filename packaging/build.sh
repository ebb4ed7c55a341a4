#!/bin/sh
# Builds the Debian and RPM packages of pam_totp, in two flavours: pam-totp / pam_totp
# (SQLite only) and pam-totp-postgresql / pam_totp-postgresql (also the PostgreSQL store
# for fleets, see docs/FLEET.md):
#
#   packaging/build.sh
#
# and leaves them in <target>/packages/, where <target> is $CARGO_TARGET_DIR when set and
# the workspace's target/ otherwise. The PostgreSQL flavour is built in <target>/pg/:
# built in the same target directory, the feature would reach the SQLite-only module too. Installs the cargo plug-ins cargo-deb and
# cargo-generate-rpm (cargo install --locked) when they are missing. See docs/PACKAGING.md.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
out=$target/packages

# The versions the packaging was verified with; one already installed is used as is.
cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb --version 3.8.0
cargo generate-rpm --version >/dev/null 2>&1 ||
    cargo install --locked cargo-generate-rpm --version 0.21.1

# cargo-generate-rpm builds nothing: one release build (stripped by the profile) serves
# both packages.
cargo build --release -p pam_totp -p totp-admin
pg_target=$target/pg
CARGO_TARGET_DIR=$pg_target cargo build --release -p pam_totp -p totp-admin \
    --features pam_totp/postgresql

mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.rpm
# The .deb's changelog, from NEWS (cargo-deb installs it as changelog.Debian.gz).
sh packaging/gen-changelog.sh packaging/deb/changelog
cargo deb -p pam_totp --no-build --output "$out/"
CARGO_TARGET_DIR=$pg_target cargo deb -p pam_totp --no-build --variant postgresql --output "$out/"
# Asset and scriptlet paths of the RPM metadata are relative to the workspace root.
cargo generate-rpm -p pam_totp --target-dir "$target" --output "$out/"
cargo generate-rpm -p pam_totp --variant postgresql --target-dir "$pg_target" --output "$out/"

echo "packages in $out:"
ls -l "$out"/*.deb "$out"/*.rpm
