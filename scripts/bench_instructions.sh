#!/usr/bin/env bash
# Instructions the agent executes per produced and per fetched record, counted by callgrind.
#
# Instruction counts hold on a noisy shared machine where times do not (two runs of the same
# binary agree within a few percent; the rest is batching that depends on timing). One release
# agent on its embedded defaults runs under `valgrind --tool=callgrind`; the built-in bench
# (native, not counted) produces N records, then reads them back. The counters are zeroed
# before each phase and dumped after it (`callgrind_control`), so start-up and topic creation
# are not counted; an idle phase of the same agent shows what background loops add.
#
# Usage: scripts/bench_instructions.sh [--bin PATH] [--records N] [--partitions P]
#            [--compression none|lz4] [--batch-size BYTES] [--keep DIR]
# --batch-size is the producer's batch.size (the bench's default, 1,000,000, makes batches about
# as large as the agent's 1 MiB cache blocks; Java clients default to 16,384).
# --keep DIR keeps the callgrind dumps there (read them with `callgrind_annotate DIR/cg.out.2`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/streamhouse records=100000 partitions=6 compression=none keep="" batch=1000000
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --records) records="$2"; shift 2 ;;
        --partitions) partitions="$2"; shift 2 ;;
        --compression) compression="$2"; shift 2 ;;
        --batch-size) batch="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
dir="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$dir"/cg.out* "$keep"/ 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port) http=$(free_port)
RUST_LOG=warn valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$dir/cg.out" \
    "$bin" serve --data-dir "$dir/data" --kafka-addr "127.0.0.1:$port" \
    --http-addr "127.0.0.1:$http" >"$dir/agent.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/agent.log" >&2; exit 1; }
    sleep 0.2
done
client=("$bin" --bootstrap "127.0.0.1:$port")
"${client[@]}" topic create icount --partitions "$partitions" >/dev/null

# Instructions counted since the last zero or dump, after running "$@".
phase() {
    local name="$1"; shift
    callgrind_control -z "$pid" >/dev/null 2>&1
    "$@" >/dev/null
    callgrind_control -d "$name" "$pid" >/dev/null 2>&1
    local last
    last=$(ls -1v "$dir"/cg.out.* | tail -1)
    awk '/^summary:/ {print $2}' "$last"
}
idle=$(phase idle sleep 5)
produced=$(phase produce "${client[@]}" bench produce --topic icount -q --records "$records" \
    --record-size 1024 --compression "$compression" --batch-size "$batch")
fetched=$(phase fetch "${client[@]}" bench consume --topic icount -q)
echo "records=$records partitions=$partitions record_size=1024 compression=$compression batch_size=$batch"
echo "idle_5s_instructions=$idle"
awk -v p="$produced" -v f="$fetched" -v n="$records" 'BEGIN {
    printf "produce_instructions=%d per_record=%.0f\n", p, p / n
    printf "fetch_instructions=%d per_record=%.0f\n", f, f / n }'
