#!/bin/sh
# The supply chain, checked before anything is built:
#
# - cargo-deny (deny.toml): every crate's licence is one pam_totp may ship, no other
#   source than crates.io, duplicate versions reported; and, when the RustSec advisory
#   database can be fetched, no crate with a known vulnerability or yanked version;
# - packaging/copyright and the RPM licence lines are the ones Cargo.lock gives
#   (packaging/gen-copyright.sh --check, which needs no network).
#
# Installs cargo-deny (cargo install --locked) when it is missing.
set -eu
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
    cargo install --locked cargo-deny --version 0.20.2
fi

echo "== cargo deny: licenses, bans, sources"
cargo deny --locked check licenses bans sources

echo "== cargo deny: advisories"
fetch_log=$(mktemp)
trap 'rm -f "$fetch_log"' EXIT
# A machine without a route to GitHub cannot fetch the database: that alone is no failure.
if timeout 300 cargo deny --locked fetch db >"$fetch_log" 2>&1; then
    cargo deny --locked --offline check advisories
else
    echo "advisory check skipped: the RustSec advisory database" \
        "(https://github.com/RustSec/advisory-db) could not be reached"
fi

echo "== packaging/copyright and the RPM licences against Cargo.lock"
sh packaging/gen-copyright.sh --check
