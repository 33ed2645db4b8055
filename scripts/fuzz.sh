#!/usr/bin/env bash
# Bounded fuzzing of the Kafka request decoder, produce payload parsing and the segment reader
# (cargo-fuzz targets in fuzz/, its own workspace, built into fuzz/target). Runs each target for
# SECONDS (default 60) from its committed seed corpus in fuzz/corpus/<target>/; exits non-zero on
# the first crash, hang (an input taking over 10 s) or out-of-memory, printing the input that
# caused it (path, and its bytes when small, since a CI machine's files are gone afterwards) and
# how to reproduce it. Every such input becomes a regression test in the crate that owns the
# code: kafka_request in crates/protocol/tests/it/decode.rs, record_batches and segment_reader in
# crates/segment/tests/it/corruption.rs. scripts/test.sh (CI) runs this with 60 s per target.
#
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags (sanitizer
# coverage instrumentation and AddressSanitizer) to the stable compiler. The build is release
# with debug assertions and overflow checks (cargo-fuzz's default): overflow checks are part of
# what the targets look for.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(kafka_request record_batches segment_reader)
fi
# Inputs up to this size are printed byte by byte when they fail.
print_max_bytes=4096

started=$SECONDS
if ! cargo fuzz --version >/dev/null 2>&1; then
    printf '\n==> cargo install cargo-fuzz\n'
    cargo install cargo-fuzz --locked
    echo "installed cargo-fuzz in $((SECONDS - started))s"
fi
export RUSTC_BOOTSTRAP=1

printf '\n==> cargo fuzz build (%s)\n' "${targets[*]}"
build_started=$SECONDS
cargo fuzz build
echo "fuzz build took $((SECONDS - build_started))s"

# Prints what a failing run left in its artifacts directory and how to turn it into a test.
report_failure() {
    local target="$1" marker="$2" input
    echo "FUZZ FAILURE in $target; input(s):" >&2
    while IFS= read -r input; do
        echo "  $input ($(stat -c %s "$input") bytes)" >&2
        if [ "$(stat -c %s "$input")" -le "$print_max_bytes" ]; then
            od -An -tx1 -v "$input" >&2
        fi
        echo "  reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $target $input" >&2
    done < <(find "fuzz/artifacts/$target" -type f -newer "$marker")
    echo "Keep the input as a regression test (see the header of scripts/fuzz.sh for where)." >&2
}

for target in "${targets[@]}"; do
    printf '\n==> fuzzing %s for %ss\n' "$target" "$seconds"
    # New inputs go to a scratch directory, so a run never changes the committed corpus.
    scratch="$(mktemp -d)"
    mkdir -p "fuzz/artifacts/$target"
    marker="$scratch/.started"
    touch "$marker"
    status=0
    cargo fuzz run "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ||
        status=$?
    if [ "$status" -ne 0 ]; then
        report_failure "$target" "$marker"
        rm -rf "$scratch"
        exit 1
    fi
    rm -rf "$scratch"
done
echo "fuzzing passed: ${targets[*]}, ${seconds}s each, $((SECONDS - started))s in all"
