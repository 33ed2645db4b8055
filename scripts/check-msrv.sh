#!/usr/bin/env bash
# The MSRV gate: the declared `rust-version` must be a toolchain that is actually built.
#   1. every workspace crate declares the workspace's `rust-version` (so clippy's
#      `incompatible_msrv` lint guards every crate's use of std against it);
#   2. no dependency built for this host needs a newer Rust than declared;
#   3. the toolchain this build uses IS the declared version (then the normal build, clippy and
#      tests are the MSRV build), or a toolchain of that version is installed and the workspace
#      is checked with it here. Otherwise the declaration is unproven and the gate fails: no
#      toolchain can be downloaded in CI, so an older MSRV cannot be claimed.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "check-msrv: FAILED: $*" >&2
    exit 1
}

host="$(rustc -vV | sed -n 's/^host: //p')"
toolchain="$(rustc -vV | sed -n 's/^release: //p')"

# Prints "declared=X", "floor=RUST NAME VERSION" and one "undeclared=CRATE" per member without it.
report="$(cargo metadata --format-version 1 --locked --filter-platform "$host" | python3 -c '
import json, sys

def key(v):
    return tuple(int(x) for x in (v.split(".") + ["0", "0"])[:3])

m = json.load(sys.stdin)
members = set(m["workspace_members"])
built = {n["id"] for n in m["resolve"]["nodes"]}
declared = {p["rust_version"] for p in m["packages"] if p["id"] in members}
for p in m["packages"]:
    if p["id"] in members and not p.get("rust_version"):
        print("undeclared=" + p["name"])
print("declared=" + ",".join(sorted(v for v in declared if v)))
deps = [p for p in m["packages"] if p["id"] in built and p["id"] not in members and p.get("rust_version")]
top = max(deps, key=lambda p: key(p["rust_version"]))
print("floor=%s %s %s" % (top["rust_version"], top["name"], top["version"]))
')"

undeclared="$(sed -n 's/^undeclared=//p' <<<"$report" | tr '\n' ' ')"
[ -z "$undeclared" ] || fail "crates without 'rust-version.workspace = true': $undeclared"
declared="$(sed -n 's/^declared=//p' <<<"$report")"
[[ "$declared" != *,* ]] || fail "workspace crates declare different rust-versions: $declared"
floor="$(sed -n 's/^floor=//p' <<<"$report")"
floor_version="${floor%% *}"
floor_crate="${floor#* }"

# major.minor.patch, a missing part being 0; patch releases add no APIs, so compare major.minor.
minor() { awk -F. '{printf "%d.%d", $1, $2}' <<<"$1"; }
newer() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$1" ] && [ "$1" != "$2" ]; }

if newer "$(minor "$floor_version")" "$(minor "$declared")"; then
    fail "rust-version is $declared but the dependency $floor_crate needs Rust $floor_version: raise rust-version in Cargo.toml"
fi

if [ "$(minor "$toolchain")" = "$(minor "$declared")" ]; then
    echo "check-msrv: ok: rust-version $declared is the toolchain building this ($toolchain);" \
        "the highest dependency floor is $floor_version ($floor_crate)"
    exit 0
fi

want="$(minor "$declared")"
if command -v rustup >/dev/null && rustup toolchain list | grep -Eq "^${want//./\\.}(\.[0-9]+)?-"; then
    echo "check-msrv: building with the installed $want toolchain (rust-version $declared)"
    cargo "+$(rustup toolchain list | grep -Eo "^${want//./\\.}(\.[0-9]+)?" | sort -V | head -1)" \
        check --workspace --all-targets --locked \
        || fail "the workspace does not build with Rust $want, its declared rust-version"
    echo "check-msrv: ok: the workspace builds with Rust $want"
    exit 0
fi

fail "rust-version is $declared, but this build uses Rust $toolchain and no $want toolchain is" \
    "installed, so nothing proves Rust $want builds it. Declare rust-version = \"$(minor "$toolchain")\"" \
    "in Cargo.toml (and check clippy's incompatible_msrv) or install a $want toolchain."
