#!/usr/bin/env bash
# Benchmarks pam_totp against google-authenticator-libpam and pam_oath through real
# libpam (pam_wrapper, a private service directory holding only the module under test),
# with codes computed by the driver (tests/src/bin/pam-bench.rs).
#
#   tests/bench/run.sh [AUTHS]
#
# Prints a Markdown report: auths/s, p50/p99 latency and CPU per authentication for 1
# and 8 processes and 50 / 10,000 / 100,000 enrolled users, and instructions per
# authentication under callgrind (repeatable on a shared machine). Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."

# pam_wrapper keeps per-process state in /tmp/pam.X, X one random character: a private
# /tmp keeps stale directories of other programs from colliding with the driver's.
if [ -z "${PAM_TOTP_BENCH_PRIVATE_TMP:-}" ]; then
    exec env PAM_TOTP_BENCH_PRIVATE_TMP=1 unshare -m --propagation private -- \
        bash -c 'mount -t tmpfs -o mode=1777 bench-tmp /tmp && exec bash "$0" "$@"' "$0" "$@"
fi

auths=${1:-2000}
work=$(mktemp -d /var/tmp/pam_totp-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The module is a library: --bins alone would leave a stale pam_totp.so in place.
cargo build --release -p pam_totp --lib >&2
cargo build --release -p pam_totp_tests --bins >&2
bench=$PWD/target/release/pam-bench

export PAM_WRAPPER=1
run() { # kind dir users auths procs [--wrong]
    local kind=$1 dir=$2
    shift 2
    LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER_SERVICE_DIR="$dir/services" "$bench" run "$kind" "$dir" "$@"
}

instructions() { # kind dir users [--wrong]: (Ir(2n) - Ir(n)) / n
    local kind=$1 dir=$2 users=$3 wrong=${4:-} n=20 a b
    a=$(PAM_WRAPPER_DISABLE_DEEPBIND=1 LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER_SERVICE_DIR="$dir/services" \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bench" run "$kind" "$dir" "$users" $n 1 $wrong 2>&1 |
        sed -n 's/.*Collected : \([0-9,]*\).*/\1/p' | tr -d ,)
    b=$(PAM_WRAPPER_DISABLE_DEEPBIND=1 LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER_SERVICE_DIR="$dir/services" \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bench" run "$kind" "$dir" "$users" $((2 * n)) 1 $wrong 2>&1 |
        sed -n 's/.*Collected : \([0-9,]*\).*/\1/p' | tr -d ,)
    echo $(((b - a) / n))
}

field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }

echo "## Results ($(date -u +%Y-%m-%d), $(nproc) cores, $auths authentications per run)"
echo
echo "| module | users | procs | path | ok / auths | auths/s | p50 µs | p99 µs | CPU µs/auth |"
echo "|---|---:|---:|---|---:|---:|---:|---:|---:|"
for kind in totp ga ga-strict oath; do
    for users in 50 10000 100000; do
        dir=$work/$kind-$users
        "$bench" setup "$kind" "$dir" "$users"
        n=$auths
        # pam_oath reads and rewrites its whole users file on every login.
        if [ "$kind" = oath ] && [ "$users" -gt 50 ]; then n=$((auths / 10)); fi
        for procs in 1 8; do
            if [ "$procs" = 8 ] && [ "$users" -lt "$n" ]; then continue; fi
            for path in right wrong; do
                if [ "$path" = wrong ] && [ "$procs" = 8 ]; then continue; fi
                flag=""
                [ "$path" = wrong ] && flag=--wrong
                line=$(run "$kind" "$dir" "$users" "$n" "$procs" $flag)
                echo "| $kind | $users | $procs | $path | $(field "$line" ok) / $(field "$line" auths) | $(field "$line" per_sec) | $(field "$line" p50_us) | $(field "$line" p99_us) | $(field "$line" cpu_us_per_auth) |"
            done
        done
    done
done
echo
echo "| module | users | path | instructions per authentication (callgrind) |"
echo "|---|---:|---|---:|"
for kind in totp ga ga-strict oath; do
    for users in 50 100000; do
        dir=$work/$kind-$users
        [ -d "$dir" ] || "$bench" setup "$kind" "$dir" "$users"
        for path in right wrong; do
            flag=""
            [ "$path" = wrong ] && flag=--wrong
            "$bench" setup "$kind" "$dir" "$users" >/dev/null
            echo "| $kind | $users | $path | $(instructions "$kind" "$dir" "$users" $flag) |"
        done
    done
done
# The same driver, libpam and pam_wrapper with pam_permit.so as the only module: what
# every row above includes besides the module under test.
dir=$work/baseline
"$bench" setup totp "$dir" 50 >/dev/null
echo "auth required pam_permit.so" >"$dir/services/bench"
echo "| baseline: pam_permit.so | 50 | right | $(instructions totp "$dir" 50) |"
