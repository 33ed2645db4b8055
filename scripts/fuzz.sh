#!/usr/bin/env bash
# Bounded fuzzing of the Kafka request decoder, produce payload parsing and the segment reader
# (cargo-fuzz targets in fuzz/, its own workspace). Runs each target for SECONDS (default 60)
# from its committed seed corpus in fuzz/corpus/<target>/; exits non-zero on the first crash,
# hang (an input taking over 10 s) or out-of-memory, printing the input that caused it, which
# then becomes a regular regression test in the owning crate.
#
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags (sanitizer
# coverage instrumentation and AddressSanitizer) to the stable compiler.
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

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

printf '\n==> cargo fuzz build (%s)\n' "${targets[*]}"
cargo fuzz build

failed=0
for target in "${targets[@]}"; do
    printf '\n==> fuzzing %s for %ss\n' "$target" "$seconds"
    # New inputs go to a scratch directory, so a run never changes the committed corpus.
    scratch="$(mktemp -d)"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$artifacts"
    marker="$scratch/.started"
    touch "$marker"
    if ! cargo fuzz run "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed=1
        echo "FUZZ FAILURE in $target; input(s):" >&2
        find "$artifacts" -type f -newer "$marker" -print >&2
        echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $target <input>" >&2
    fi
    rm -rf "$scratch"
    [ "$failed" -eq 0 ] || exit 1
done
echo "fuzzing passed: ${targets[*]}, ${seconds}s each"
