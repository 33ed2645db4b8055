#!/usr/bin/env bash
# Sweeps the group-commit interval (`--flush-interval-ms`): one release agent per setting on a
# fresh data dir, the same external load (scripts/bench_kafka.py, librdkafka) against each.
# Usage: scripts/bench_flush_interval.sh [intervals...]   (default: 1 2 5 10 20)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p streamhouse >&2
bin=target/release/streamhouse
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for interval in "${@:-1 2 5 10 20}"; do
    for iv in $interval; do
        rm -rf "$dir/data"
        "$bin" serve --data-dir "$dir/data" --kafka-addr 127.0.0.1:29094 \
            --http-addr 127.0.0.1:28082 --flush-interval-ms "$iv" 2>"$dir/server.log" &
        pid=$!
        sleep 1
        .venv/bin/python scripts/bench_kafka.py --bootstrap 127.0.0.1:29094 --topic sweep \
            --count 100000 --rate 1000 --latency-seconds 5 2>/dev/null |
            .venv/bin/python -c "
import json, sys
d = json.load(sys.stdin); l = d['latency']
print(f\"interval_ms=$iv produce_MBps={d['produce']['mb_per_s']:.1f} \"
      f\"consume_MBps={d['consume']['mb_per_s']:.1f} \"
      f\"ack_p50={l['produce_ack_ms']['p50']:.1f} ack_p99={l['produce_ack_ms']['p99']:.1f} \"
      f\"e2e_p50={l['end_to_end_ms']['p50']:.1f} e2e_p99={l['end_to_end_ms']['p99']:.1f}\")"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
