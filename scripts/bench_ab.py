#!/usr/bin/env python3
"""A/B of StreamHouse builds (or settings) under Kafka's own Java perf tools, alternating.

    .venv/bin/python scripts/bench_ab.py --variant before=/tmp/sh-before \\
        --variant after=target/release/streamhouse[,ENV=VALUE...] \\
        [--rounds 3] [--records 200000] [--partitions 6] [--codec none] [--after 0] [--warmup] \\
        [--tool java|builtin]

Per round and variant, in turn: a fresh agent (`bench_kafka_tools.Agent`, embedded defaults,
`--group-initial-rebalance-delay-ms 0`), a new topic, `kafka-producer-perf-test` (1 KiB records,
acks=all, `batch.size=262144 linger.ms=5`), then `kafka-consumer-perf-test` of the same records
(with `--tool builtin`, `streamhouse bench produce` and `consume` with the same settings).
Records produce MB/s, the consumer's fetch-phase MB/s, and from the agent's /proc its CPU
seconds per GB, minor page faults and context switches per MB of each phase, and from its
/metrics the object store's PUTs per MB produced, GETs per MB consumed and the bytes those GETs
read per byte consumed (above 1: the block cache read more than the consumer took). With
`--after S`, the agent is then left alone for S seconds and its CPU in that window is reported
per GB produced (`after_cpu_s_gb`): the background work the round's data costs, consolidation
above all (it rewrites slices 10-60 s old, so 75 s covers it), with the minor page faults of
that window (`after_faults`). With
`--warmup`, each agent first takes 300,000 records on another topic, unmeasured, so the round
measures an agent whose block cache (256 MiB) is already full: a fresh agent's first 256 MiB
produced also fault in the cache's memory. Prints every run, then medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_kafka_tools as tools  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
# Records of 1 KiB `--warmup` produces: more than the agent's default block cache (256 MiB).
WARMUP_RECORDS = 300_000


def counters(pid: int) -> tuple[float, int, int]:
    """CPU seconds (user + system), minor page faults and context switches of `pid` so far.

    Context switches are summed over the threads alive now (a blocking-pool thread that exited
    takes its count with it), so they are a close lower bound; they count wakeups, a figure
    that holds on a noisy machine where CPU seconds do not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    switches = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:
                    switches += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited while being read
    return (int(fields[11]) + int(fields[12])) / TICKS, int(fields[7]), switches


def store_counters(agent: tools.Agent) -> dict[str, float]:
    """The agent's object-store counters so far, from its /metrics: requests per operation
    (`get`, `put`, ...) and the payload bytes of GETs (`get_bytes`)."""
    text = urllib.request.urlopen(f"http://{agent.http}/metrics", timeout=10).read().decode()
    found: dict[str, float] = {}
    for name, op, value in re.findall(
            r'^streamhouse_object_store_(requests|bytes)_total\{op="(\w+)"\} (\S+)$', text,
            re.MULTILINE):
        found[op if name == "requests" else f"{op}_bytes"] = float(value)
    return found


def start_agent(binary: str, env: dict[str, str]) -> tools.Agent:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return tools.Agent(binary, Path(tempfile.mkdtemp(prefix="ab-")),
                           ["--group-initial-rebalance-delay-ms", "0"])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(classpath: str, binary: str, env: dict[str, str], args) -> dict:
    agent = start_agent(binary, env)
    try:
        def produce(records: int) -> tuple[str, str]:
            topic = "ab-" + uuid.uuid4().hex[:8]
            agent.create_topic(binary, topic, args.partitions)
            if args.tool == "builtin":
                return topic, builtin(binary, agent, [
                    "produce", "--topic", topic, "--records", str(records), "--record-size",
                    "1024", "--batch-size", "262144", "--linger", "5ms", "--compression",
                    args.codec])
            return topic, tools.java(classpath, "org.apache.kafka.tools.ProducerPerformance", [
                "--topic", topic, "--num-records", str(records), "--record-size", "1024",
                "--throughput", "-1", "--producer-props", f"bootstrap.servers={agent.bootstrap}",
                "acks=all", "batch.size=262144", "linger.ms=5", f"compression.type={args.codec}"])
        if args.warmup:
            produce(WARMUP_RECORDS)
        gb = args.records * 1024 / 1e9
        cpu0, faults0, switches0 = counters(agent.proc.pid)
        store0 = store_counters(agent)
        topic, produced = produce(args.records)
        cpu1, faults1, switches1 = counters(agent.proc.pid)
        store1 = store_counters(agent)
        if args.tool == "builtin":
            consumed = builtin(binary, agent, ["consume", "--topic", topic])
        else:
            consumed = tools.java(classpath, "org.apache.kafka.tools.ConsumerPerformance", [
                "--bootstrap-server", agent.bootstrap, "--topic", topic,
                "--messages", str(args.records), "--timeout", "60000"])
        cpu2, faults2, switches2 = counters(agent.proc.pid)
        store2 = store_counters(agent)
        time.sleep(args.after)
        cpu3, faults3, _ = counters(agent.proc.pid)
    finally:
        agent.stop()
        # Each run writes its records to a fresh data dir: hundreds of MB a run otherwise left
        # behind in /tmp (and its page cache) for the next runs to compete with.
        shutil.rmtree(agent.data_dir, ignore_errors=True)
    produce_mb_s, fetch_mb_s = rates(args.tool, produced, consumed)
    result = {
        "produce_mb_s": produce_mb_s,
        "fetch_mb_s": fetch_mb_s,
        "produce_cpu_s_gb": (cpu1 - cpu0) / gb,
        "consume_cpu_s_gb": (cpu2 - cpu1) / gb,
        "produce_faults": faults1 - faults0,
        "consume_faults": faults2 - faults1,
        "produce_switches_per_mb": (switches1 - switches0) / (gb * 1000),
        "consume_switches_per_mb": (switches2 - switches1) / (gb * 1000),
        # Requests to the store: PUTs per MB produced; while consuming, GETs per MB and the
        # bytes they read per byte consumed (the block cache's read amplification).
        "produce_puts_per_mb": delta(store0, store1, "put") / (gb * 1000),
        "consume_gets_per_mb": delta(store1, store2, "get") / (gb * 1000),
        "consume_read_ratio": delta(store1, store2, "get_bytes") / (gb * 1e9),
    }
    if args.after > 0:
        result["after_cpu_s_gb"] = (cpu3 - cpu2) / gb
        result["after_faults"] = faults3 - faults2
    return result


def builtin(binary: str, agent: tools.Agent, command: list[str]) -> str:
    """Runs `streamhouse bench COMMAND` against `agent`; returns its JSON results."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        subprocess.run([binary, "bench", "--bootstrap", agent.bootstrap, *command, "-q",
                        "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        return out.read_text()
    finally:
        out.unlink()


def rates(tool: str, produced: str, consumed: str) -> tuple[float, float]:
    """Produce MB/s and the consumer's MB/s (the Java consumer's fetch phase) from the tools'
    output."""
    if tool == "builtin":
        return (json.loads(produced)["produce"]["mb_per_s"],
                json.loads(consumed)["consume"]["mb_per_s"])
    summary = [line for line in produced.splitlines() if "records sent" in line][-1]
    row = [line for line in consumed.splitlines() if line[:1].isdigit()][-1].split(",")
    return float(summary.split("(")[1].split()[0]), float(row[8])


def delta(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME=BINARY[,ENV=VALUE...]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--codec", default="none")
    parser.add_argument("--tool", choices=["java", "builtin"], default="java",
                        help="load generators: Kafka's Java perf tools, or `streamhouse bench` "
                             "(same records, batch size and linger; its consumer leaves the "
                             "agent more of the machine's two cores)")
    parser.add_argument("--after", type=float, default=0,
                        help="seconds to stay idle after consuming, measuring background CPU")
    parser.add_argument("--warmup", action="store_true",
                        help="produce the same load to another topic first, unmeasured")
    args = parser.parse_args()
    variants = {}
    for spec in args.variant:
        name, rest = spec.split("=", 1)
        binary, *env = rest.split(",")
        variants[name] = (binary, dict(e.split("=", 1) for e in env))
    classpath = tools.kafka_classpath()
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (binary, env) in variants.items():
            results[name].append(run(classpath, binary, env, args))
            print(name, results[name][-1], flush=True)
    for name, rows in results.items():
        print(name, "medians:",
              {key: round(statistics.median(r[key] for r in rows), 2) for key in rows[0]})


if __name__ == "__main__":
    main()
