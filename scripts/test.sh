#!/usr/bin/env bash
# THE test command: dependencies, debug build, Rust tests, bounded fuzzing (STREAMHOUSE_FUZZ_SECONDS
# per target, default 60), then the end-to-end suite (real Kafka clients against the built
# `streamhouse` binary, with Python, Go and Java clients). Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints the seconds elapsed so far, so a slow step shows in the CI log.
step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

step "test dependencies"
bash scripts/setup-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check || { echo "cargo fmt: FAILED: run 'cargo fmt --all'" >&2; exit 1; }

step "MSRV: the declared rust-version is the toolchain that builds (scripts/check-msrv.sh)"
bash scripts/check-msrv.sh

step "cargo build --workspace"
cargo build --workspace

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings \
    || { echo "cargo clippy: FAILED: fix the warnings above (they are errors)" >&2; exit 1; }

step "dependencies: cargo deny check bans licenses sources (scripts/check-deps.sh)"
bash scripts/check-deps.sh

step "cargo doc (warnings are errors; every library crate warns on missing docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace \
    || { echo "cargo doc: FAILED: fix the doc warnings above (missing docs, broken links)" >&2; exit 1; }

step "cargo test --workspace"
# The PostgreSQL backend tests must run, not skip: setup-test-deps.sh installed the server.
STREAMHOUSE_REQUIRE_POSTGRES=1 cargo test --workspace

step "fuzzing (scripts/fuzz.sh, ${STREAMHOUSE_FUZZ_SECONDS:=60}s per target)"
# Bounded: request decode, produce payloads, segment reader. A crash, hang or OOM fails the run
# and prints the input and how to reproduce it; it then becomes a regression test.
bash scripts/fuzz.sh "$STREAMHOUSE_FUZZ_SECONDS"

target_dir="$(cargo metadata --format-version 1 --no-deps \
    | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export STREAMHOUSE_BIN="${STREAMHOUSE_BIN:-$target_dir/debug/streamhouse}"

step "end-to-end tests (pytest tests/e2e, binary $STREAMHOUSE_BIN)"
# Exit code 5 (no tests collected) is a failure too: the suite must never silently vanish.
.venv/bin/pytest -q tests/e2e "$@"

step "end-to-end tests again with segments in S3 (moto server on 127.0.0.1)"
STREAMHOUSE_E2E_OBJECT_STORE=s3 .venv/bin/pytest -q tests/e2e "$@"

step "Go clients: franz-go and sarama (scripts/go-test.sh)"
bash scripts/go-test.sh

step "Java client: kafka-clients (scripts/java-test.sh)"
bash scripts/java-test.sh

step "README client table matches the Go and Java suites' results"
python3 scripts/client-matrix.py --check README.md

step "OpenAPI conformance (schemathesis against the real agent)"
bash scripts/api-conformance.sh

step "web console (headless Chromium)"
# Screenshots for the README are refreshed by running scripts/console-test.sh by hand; the suite
# writes them to a scratch directory so a test run never changes tracked files.
SCREENSHOT_DIR="$(mktemp -d)" bash scripts/console-test.sh

step "all tests passed"
