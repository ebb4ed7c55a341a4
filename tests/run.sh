#!/usr/bin/env bash
# The whole test suite: unit tests, then the end-to-end tests against the release
# build (the module through real libpam, totp-admin setuid, sshd, login/su and the
# packages). Run as root: the end-to-end tests create users inside private mount
# namespaces and leave the host's files as they were. Works from a checkout anywhere
# (/tmp included) on a fresh Debian 12 machine: it installs the system packages it
# needs (apt-get, skipped when they are all there) and Rust when cargo is missing; the
# cargo plug-ins come with packaging/build.sh and fuzz/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: run as root (the end-to-end tests use private mount namespaces)" >&2
    exit 1
fi

# shellcheck source=tests/deps.sh
. tests/deps.sh

echo "== unit tests"
cargo test --workspace --exclude pam_totp_tests

echo "== release build and packages"
bash packaging/build.sh

echo "== PostgreSQL build (the module and totp-admin of the pam-totp-postgresql flavour)"
# Its own target directory (packaging/build.sh has built it there already): built with
# the default one, the feature would be compiled into the SQLite-only module too.
pg_target="${CARGO_TARGET_DIR:-$PWD/target}/pg"
CARGO_TARGET_DIR="$pg_target" cargo build --release -p pam_totp -p totp-admin \
    --features pam_totp/postgresql
export PAM_TOTP_PG_RELEASE="$pg_target/release"

echo "== fuzz targets (20 s each)"
bash fuzz/run.sh 20

echo "== end-to-end tests"
cargo test --release -p pam_totp_tests -- --test-threads=2
