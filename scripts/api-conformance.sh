#!/usr/bin/env bash
# OpenAPI conformance: runs schemathesis with docs/openapi.yaml against a real agent (debug
# binary, free ports, temporary data directory) with SASL on, so the API requires HTTP Basic
# (schemathesis logs in as a super user). Checks: no 5xx, documented status codes,
# content types and response schemas. Bounded (a fixed seed and a few examples per operation)
# so it fits in CI. Extra arguments go to `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/agent.sh

REQUIREMENTS=tests/api/requirements.txt
VENV=.venv
STAMP="$VENV/.api-requirements.sha256"

ensure_schemathesis() {
    [ -x "$VENV/bin/python" ] || bash scripts/setup-test-deps.sh
    local want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && [ -x "$VENV/bin/schemathesis" ]; then
        return
    fi
    "$VENV/bin/pip" install -q -r "$REQUIREMENTS"
    echo "$want" >"$STAMP"
}

ensure_schemathesis
API_USER=admin
API_PASSWORD="api-$RANDOM$RANDOM"
export STREAMHOUSE_SASL_USERS="$API_USER:$API_PASSWORD"
start_agent --sasl --super-user "User:$API_USER"
echo "api-conformance: agent at $AGENT_URL (login $API_USER)"

# The data the schema's examples name, so operations on one topic or group get past 404.
post() {
    curl -sf -u "$API_USER:$API_PASSWORD" -X POST -H 'content-type: application/json' -d "$2" \
        "$AGENT_URL$1" >/dev/null
}
post /api/v1/topics '{"name": "orders", "partitions": 2}'
post /api/v1/topics/orders/records '{"records": [{"key": "a", "value": "1"}, {"value": "2", "partition": 0}]}'
post /api/v1/groups/orders-readers/offsets '{"offsets": [{"topic": "orders", "partition": 0, "offset": 1}]}'

# From the agent's temporary directory, so schemathesis's own cache stays out of the repo.
root="$PWD"
cd "$AGENT_DIR"
conformance() {
    "$root/$VENV/bin/schemathesis" run "$root/docs/openapi.yaml" \
        --url "$AGENT_URL" \
        --auth "$API_USER:$API_PASSWORD" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --mode positive \
        --phases examples,coverage,fuzzing \
        --max-examples "${API_CONFORMANCE_EXAMPLES:-25}" \
        --seed "${API_CONFORMANCE_SEED:-20261126}" \
        --generation-database none \
        --request-timeout 40 \
        --no-color \
        "$@"
}
# Changing a user's password is fuzzed last and apart: the fuzzer tries the logged-in user's
# own name, and once it has changed that password every later request is refused (401).
USER_PATH=/api/v1/users/{name}
conformance --exclude-path "$USER_PATH" "$@"
conformance --include-path "$USER_PATH" "$@"
