# Sourced by test scripts: runs a real `streamhouse serve` on free ports with a temporary data
# directory for the lifetime of the calling script.
#   start_agent [SERVE FLAGS...] -> sets AGENT_URL (HTTP base URL), AGENT_KAFKA (host:port),
#                                   AGENT_PID; extra flags go to `streamhouse serve`
#   The agent is stopped and its data directory removed when the script exits.
# Uses $STREAMHOUSE_BIN when set, else builds the debug binary.

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

agent_binary() {
    if [ -n "${STREAMHOUSE_BIN:-}" ]; then
        echo "$STREAMHOUSE_BIN"
        return
    fi
    cargo build -q -p streamhouse >&2
    local target
    target="$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    echo "$target/debug/streamhouse"
}

stop_agent() {
    if [ -n "${AGENT_PID:-}" ]; then
        kill "$AGENT_PID" 2>/dev/null || true
        wait "$AGENT_PID" 2>/dev/null || true
    fi
    [ -n "${AGENT_DIR:-}" ] && rm -rf "$AGENT_DIR"
}

start_agent() {
    local bin http_port kafka_port
    bin="$(agent_binary)"
    AGENT_DIR="$(mktemp -d)"
    http_port="$(free_port)"
    kafka_port="$(free_port)"
    AGENT_URL="http://127.0.0.1:$http_port"
    AGENT_KAFKA="127.0.0.1:$kafka_port"
    "$bin" serve --data-dir "$AGENT_DIR/data" --kafka-addr "$AGENT_KAFKA" \
        --http-addr "127.0.0.1:$http_port" "$@" >"$AGENT_DIR/agent.log" 2>&1 &
    AGENT_PID=$!
    trap stop_agent EXIT
    local i
    for i in $(seq 1 100); do
        if curl -sf "$AGENT_URL/ready" >/dev/null 2>&1; then
            return
        fi
        if ! kill -0 "$AGENT_PID" 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    echo "agent did not become ready; its log:" >&2
    cat "$AGENT_DIR/agent.log" >&2
    return 1
}
