#!/usr/bin/env bash
# The Java client suite (tests/java: Apache Kafka's kafka-clients and tools, JUnit 5, against the
# built `streamhouse` binary, which the tests start themselves). The Maven repository stays inside
# the repository (.cache/m2, ignored): the first run downloads from Maven Central, later runs are
# offline.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
for tool in java mvn; do
    command -v "$tool" >/dev/null || { echo "$tool not found (scripts/setup-test-deps.sh installs it)" >&2; exit 1; }
done
export STREAMHOUSE_BIN="$(realpath "${STREAMHOUSE_BIN:-$repo/target/debug/streamhouse}")"
# Offline once a run with this pom.xml has passed, so later runs do not wait on Maven
# Central's checks; a changed pom.xml downloads again.
stamp="$repo/.cache/m2/.pom-$(sha256sum tests/java/pom.xml | cut -c1-16)"
offline=()
[[ -f "$stamp" ]] && offline=(--offline)
mvn -B --no-transfer-progress "${offline[@]}" -Dmaven.repo.local="$repo/.cache/m2" \
    -f tests/java/pom.xml test "$@"
touch "$stamp"
