#!/usr/bin/env bash
# Installs Debian's chromium for the console test, idempotently (nothing happens when it is
# already installed). The test drives it with playwright-core, which never downloads a browser.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
echo "setup-browser: installing chromium" >&2
as_root apt-get update -qq >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
