#!/usr/bin/env bash
# Runs every fuzz target with libFuzzer for a bounded time and fails on a crash.
#
#   fuzz/run.sh [SECONDS]      # per target; 20 unless given
#
# Each target starts from its checked-in corpus (fuzz/corpus/TARGET), which libFuzzer
# replays first; new inputs go to a scratch directory, so the checked-in corpus only
# grows by hand (`cargo fuzz cmin`, or copying a crash there once it is fixed). A crash
# is written to fuzz/artifacts/TARGET/ and reproduced with
# `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...` from the workspace root.
#
# cargo fuzz needs nightly compiler flags (-Z sanitizer, sancov); on a stable
# toolchain RUSTC_BOOTSTRAP=1 enables them. Needs cargo-fuzz (installed here when
# missing) and a C++ compiler for libFuzzer itself.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-20}"
case "$SECONDS_PER_TARGET" in
    '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
if ! rustc -V | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

TARGETS=(config_parse answer_check gauth_import otpauth_base32)
# -a: release build with debug assertions, so integer overflow is a crash too.
BUILD=(-a)

echo "== fuzz: building ${TARGETS[*]}"
cargo fuzz build "${BUILD[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${TARGETS[@]}"; do
    echo "== fuzz: $target for ${SECONDS_PER_TARGET} s"
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a runaway allocation.
    # The outer timeout bounds the run if libFuzzer itself stalls.
    if ! timeout $((SECONDS_PER_TARGET + 120)) cargo fuzz run "${BUILD[@]}" "$target" \
        "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>"$scratch/$target.log"; then
        failed+=("$target")
        tail -n 60 "$scratch/$target.log" >&2
        continue
    fi
    grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$scratch/$target.log" || true
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, ${SECONDS_PER_TARGET} s each: no crash"
