#!/usr/bin/env bash
# The Go client suite (tests/go: franz-go and IBM/sarama against the built `streamhouse` binary,
# which the tests start themselves). Modules and build cache stay inside the repository
# (.cache/go, ignored), so nothing is installed elsewhere; the first run downloads the modules
# from the Go module proxy, later runs are offline.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
command -v go >/dev/null || { echo "go not found: the Go suite needs the Go toolchain" >&2; exit 1; }
export GOMODCACHE="$repo/.cache/go/mod" GOCACHE="$repo/.cache/go/build" GOFLAGS=-modcacherw
# The tests run in tests/go, so the binary's path must not be relative.
export STREAMHOUSE_BIN="$(realpath "${STREAMHOUSE_BIN:-$repo/target/debug/streamhouse}")"
# The verbose log is kept for scripts/client-matrix.py (the README's client table).
mkdir -p "$repo/.cache/results"
cd tests/go
go test -count=1 -timeout 10m -v "$@" ./... | tee "$repo/.cache/results/go-test.log" \
    | grep -v -E '^(=== (RUN|PAUSE|CONT)|\s+--- PASS)'
