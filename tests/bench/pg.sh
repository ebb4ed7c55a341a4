#!/usr/bin/env bash
# What a login costs the host with the PostgreSQL store: client CPU and wall time of
# pam_authenticate per successful login (median / 90th percentile), with TLS
# (verify-full) and without, against a throwaway PostgreSQL 15 on loopback
# (tests/src/pg_support.rs). The logins run through the project's PAM client
# (pam-client --report under pam_wrapper), one process per login, as a host would.
#
#   tests/bench/pg.sh [LOGINS]
#
# Prints a Markdown table. Run as root; needs Debian's postgresql and openssl packages.
# The PostgreSQL build goes to <target>/pg (set PAM_TOTP_PG_RELEASE to use another).
set -euo pipefail
cd "$(dirname "$0")/../.."

logins=${1:-25}
target=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${PAM_TOTP_PG_RELEASE:-}" ]; then
    CARGO_TARGET_DIR="$target/pg" cargo build --release -p pam_totp -p totp-admin \
        --features pam_totp/postgresql >&2
    export PAM_TOTP_PG_RELEASE="$target/pg/release"
fi

out=$(PAM_TOTP_BENCH_LOGINS=$logins cargo test --release -p pam_totp_tests --test fleet \
    login_cost_with_and_without_tls -- --exact --nocapture 2>&1) || {
    echo "$out" >&2
    exit 1
}

echo "## PostgreSQL login cost ($(date -u +%Y-%m-%d), $(nproc) cores, server on loopback)"
echo
echo "| connection | logins | client CPU per login, ms (p50 / p90) | wall per login, ms (p50 / p90) |"
echo "|---|---|---|---|"
sed -n 's/^BENCH-ROW //p' <<<"$out"
