#!/usr/bin/env bash
# What one authentication costs with pam_totp, google-authenticator-libpam, pam_oath and
# pam_permit (the harness alone), through real libpam: pam_start, pam_authenticate,
# pam_end per login, in one process (tests/src/bin/pam-bench.rs).
#
#   tests/bench/run.sh [AUTHS]        # as root; AUTHS per row, default 1000
#
# Every module runs as on a real host: a private mount namespace whose /dev/log is a
# syslog socket the bench serves (lines counted per login and shown), an /etc/passwd
# that knows the users who log in, and the state (pam_totp's store, the other modules'
# files) on one disk under /var/tmp. Per row: CPU (user + system, getrusage) and wall
# time per login (p50, p99) from AUTHS logins; syscalls and fsyncs per login from a
# separate run under `strace -f -c` (never timed). Then 8 processes at once against one
# store. Prints Markdown. A benchmark, not a test: nothing runs it automatically.
set -euo pipefail
cd "$(dirname "$0")/../.."

auths=${1:-1000}
release=${CARGO_TARGET_DIR:-$PWD/target}/release
bench=$release/pam-bench

if [ -z "${PAM_TOTP_BENCH_NS:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
    # The module is a library: building the bins alone would leave a stale one.
    cargo build --release -p pam_totp -p totp-admin -p pam_totp_tests >&2
    exec env PAM_TOTP_BENCH_NS=1 unshare -m --propagation private -- bash "$0" "$@"
fi

# A private /tmp holds what is mounted over the host's files: never under $work, which
# is removed at the end. The checkout and its build stay visible in it when they lie
# under /tmp.
# shellcheck source=tests/src/private_tmp.sh
. tests/src/private_tmp.sh
stage=$(mktemp -d /var/tmp/pam_totp-bench-tmp.XXXXXX)
private_tmp "$stage" 50% bench-tmp "$PWD" "$(dirname "$release")"
rmdir "$stage"

# /dev as the host's, plus a /dev/log of the bench's own.
mkdir /tmp/host-dev
mount --rbind /dev /tmp/host-dev
mount -t tmpfs -o mode=755 bench-dev /dev
for entry in /tmp/host-dev/*; do
    ln -s "$entry" "/dev/$(basename "$entry")"
done

# libpam reads the namespace's /etc/pam.d: the service "bench" holds only the module
# under test (copied in per row), everything else is refused.
mkdir /tmp/pam.d
echo "auth required pam_deny.so" >/tmp/pam.d/other
mount --bind /tmp/pam.d /etc/pam.d
use_service() { cp "$1/services/bench" /tmp/pam.d/bench; }

work=$(mktemp -d /var/tmp/pam_totp-bench.XXXXXX)
listener=""
cleanup() {
    if [ -n "$listener" ]; then kill "$listener"; fi
    rm -rf "$work"
}
trap cleanup EXIT

listener=$("$bench" listen)

# Users who log in: 50 in every single-process row, 8 × 50 for the concurrent one.
logins=50
procs=8
cp /etc/passwd /tmp/passwd
for i in $(seq 0 $((procs * logins - 1))); do
    echo "bench$i:x:$((60000 + i)):60000::/nonexistent:/usr/sbin/nologin" >>/tmp/passwd
done
mount --bind /tmp/passwd /etc/passwd

field() { sed -n "s/.*[ ^]$2=\([0-9.]*\).*/\1/p" <<<" $1"; }

# Syscalls per login: `strace -f -c` of LOGINS logins minus a run of none (start-up,
# set-up and the final count request cancel out); no state is restored inside either.
strace_run() { # out kind dir auths [--wrong]
    local out=$1 kind=$2 dir=$3 n=$4
    shift 4
    strace -f -c -U calls,name -o "$out" "$bench" run "$kind" "$dir" $logins "$n" "$@" >/dev/null
}
per_login() { # file-of-none file-of-logins: "syscall calls-per-login" lines
    awk -v n=$logins '
        FNR <= 2 || /^-/ || $2 == "total" { next }
        FNR == NR { base[$2] = $1; next }
        { d = ($1 - base[$2]) / n; if (d > 0) printf "%s %.2f\n", $2, d }
    ' "$1" "$2"
}

# module label, kind, users enrolled, path
rows=(
    "pam_permit (harness alone)|permit|50|right"
    "pam_totp|totp|50|right"
    "pam_totp|totp|50|wrong"
    "pam_totp|totp|100000|right"
    "pam_totp|totp|100000|wrong"
    "google-authenticator|ga|50|right"
    "google-authenticator|ga|50|wrong"
    "google-authenticator, -d -r 3 -R 30|ga-strict|50|right"
    "google-authenticator, -d -r 3 -R 30|ga-strict|50|wrong"
    "pam_oath|oath|50|right"
    "pam_oath|oath|50|wrong"
)

for row in "${rows[@]}"; do
    IFS='|' read -r _ kind users _ <<<"$row"
    dir=$work/$kind-$users
    [ -d "$dir" ] || "$bench" setup "$kind" "$dir" "$users"
done
"$bench" setup totp "$work/concurrent-totp" 100000
"$bench" setup ga "$work/concurrent-ga" $((procs * logins))

declare -A cpu p50 lost
echo "## Results ($(date -u +%Y-%m-%d), $(nproc) cores, $auths logins per row)"
echo
echo "| module | users | code | accepted / logins | CPU user µs | CPU system µs | CPU total µs | wall p50 µs | wall p99 µs | syscalls | fsyncs | syslog lines |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in "${rows[@]}"; do
    IFS='|' read -r label kind users path <<<"$row"
    dir=$work/$kind-$users
    flag=()
    [ "$path" = wrong ] && flag=(--wrong)
    use_service "$dir"
    line=$("$bench" run "$kind" "$dir" $logins "$auths" "${flag[@]}")
    strace_run "$work/none.strace" "$kind" "$dir" 0 "${flag[@]}"
    strace_run "$work/logins.strace" "$kind" "$dir" $logins "${flag[@]}"
    per_login "$work/none.strace" "$work/logins.strace" >"$work/$kind-$users-$path.calls"
    calls=$(awk '{ s += $2 } END { printf "%.1f", s }' "$work/$kind-$users-$path.calls")
    fsyncs=$(awk '$1 == "fsync" || $1 == "fdatasync" { s += $2 } END { printf "%.1f", s }' "$work/$kind-$users-$path.calls")
    cpu[$kind-$users-$path]=$(field "$line" cpu_us)
    p50[$kind-$users-$path]=$(field "$line" p50_us)
    case $kind in ga*) users="$users (1 file each)" ;; esac
    echo "| $label | $users | $path | $(field "$line" ok) / $(field "$line" auths) | $(field "$line" user_us) | $(field "$line" sys_us) | $(field "$line" cpu_us) | $(field "$line" p50_us) | $(field "$line" p99_us) | $calls | $fsyncs | $(field "$line" syslog_lines) |"
done

echo
echo "Syscalls per successful login (strace -f -c), 50 users:"
echo
echo "| syscall | pam_totp | google-authenticator | google-authenticator -d -r 3 -R 30 | pam_permit |"
echo "|---|---:|---:|---:|---:|"
cols=(totp-50-right ga-50-right ga-strict-50-right permit-50-right)
for name in $(cd "$work" && cat "${cols[@]/%/.calls}" | awk '{ print $1 }' | sort -u); do
    printf "| %s |" "$name"
    for c in "${cols[@]}"; do
        printf " %s |" "$(awk -v s="$name" '$1 == s { print $2 }' "$work/$c.calls")"
    done
    echo
done | sort -t'|' -k3,3 -rn

rounds=$(((auths + procs * logins - 1) / (procs * logins)))
echo
echo "$procs processes at once, each logging in its own $logins users once with valid codes, $rounds rounds:"
echo
echo "| module | users | logins | valid codes refused | logins/s | syslog lines |"
echo "|---|---:|---:|---:|---:|---:|"
for kind in totp ga; do
    dir=$work/concurrent-$kind
    use_service "$dir"
    line=$("$bench" concurrent "$kind" "$dir" $procs $logins $rounds)
    label=pam_totp users=100000
    [ "$kind" = ga ] && label=google-authenticator users="$((procs * logins)) (1 file each)"
    lost[$kind]=$(field "$line" lost)
    echo "| $label | $users | $(field "$line" auths) | $(field "$line" lost) | $(field "$line" per_sec) | $(field "$line" syslog_lines) |"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
check() { # text measured ratio limit
    local holds=no
    awk -v r="$3" -v l="$4" 'BEGIN { exit !(r <= l) }' && holds=yes
    echo "| $1 | $2 | $holds |"
}
echo
echo "Against the targets (google-authenticator: the plain row):"
echo
echo "| target | measured | holds |"
echo "|---|---|---|"
for users in 50 100000; do
    r=$(ratio "${cpu[totp-$users-right]}" "${cpu[ga-50-right]}")
    check "success CPU per login ≤ google-authenticator's ($users users)" \
        "${cpu[totp-$users-right]} vs ${cpu[ga-50-right]} µs: $r×" "$r" 1
done
for users in 50 100000; do
    r=$(ratio "${p50[totp-$users-right]}" "${p50[ga-50-right]}")
    check "success wall p50 ≤ 1.5 × google-authenticator's ($users users)" \
        "${p50[totp-$users-right]} vs ${p50[ga-50-right]} µs: $r×" "$r" 1.5
done
for users in 50 100000; do
    r=$(ratio "${cpu[totp-$users-wrong]}" "${cpu[totp-$users-right]}")
    check "wrong code CPU ≤ 1.2 × a right one's ($users users)" \
        "${cpu[totp-$users-wrong]} vs ${cpu[totp-$users-right]} µs: $r×" "$r" 1.2
done
check "$procs processes at once lose no valid code" "${lost[totp]} refused" "${lost[totp]}" 0
r=$(ratio "${cpu[totp-100000-right]}" "${cpu[totp-50-right]}")
check "success CPU with 100,000 users ≤ 1.1 × with 50" \
    "${cpu[totp-100000-right]} vs ${cpu[totp-50-right]} µs: $r×" "$r" 1.1
