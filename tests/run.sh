#!/usr/bin/env bash
# The whole test suite: unit tests, then the end-to-end tests against the release
# build (the module through real libpam, totp-admin setuid, sshd, login/su and the
# packages). Run as root: the end-to-end tests create users inside private mount
# namespaces and leave the host's files as they were.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: run as root (the end-to-end tests use private mount namespaces)" >&2
    exit 1
fi

echo "== unit tests"
cargo test --workspace --exclude pam_totp_tests

echo "== release build and packages"
bash packaging/build.sh

echo "== end-to-end tests"
cargo test --release -p pam_totp_tests -- --test-threads=2
