#!/usr/bin/env bash
# Web console test in headless Chromium: starts a real agent (debug binary, free ports,
# temporary data directory) with SASL on, so its HTTP API requires a login, and runs
# tests/console (playwright-core driving Debian's chromium, never a downloaded browser), which
# logs in through the console's form. Saves screenshots of every page under docs/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/agent.sh

bash scripts/setup-browser.sh
(
    cd tests/console
    # Installs exactly the locked playwright-core; its browser download is never wanted.
    if [ ! -d node_modules/playwright-core ] \
        || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent
    fi
)

CONSOLE_USER=admin
CONSOLE_PASSWORD="console-$RANDOM$RANDOM"
export STREAMHOUSE_SASL_USERS="$CONSOLE_USER:$CONSOLE_PASSWORD"
start_agent --sasl --super-user "User:$CONSOLE_USER"
echo "console-test: agent at $AGENT_URL (login $CONSOLE_USER)"
cd tests/console
CONSOLE_URL="$AGENT_URL" CONSOLE_USER="$CONSOLE_USER" CONSOLE_PASSWORD="$CONSOLE_PASSWORD" \
    SCREENSHOT_DIR="${SCREENSHOT_DIR:-$PWD/../../docs/screenshots}" \
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 node --test console.test.mjs
