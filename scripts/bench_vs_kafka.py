#!/usr/bin/env python3
"""StreamHouse side by side with Apache Kafka on this machine, in alternating rounds.

    cargo build --release -p streamhouse
    .venv/bin/python scripts/bench_vs_kafka.py [--rounds 2] [--warmup-rounds 1] \
        [--records 300000] [--partitions 6 120] [--codecs none lz4] [--java-only]

Kafka 4.3.1 (`org.apache.kafka:kafka_2.13`, with kafka-tools) comes from Maven Central into
.cache/m2 through tests/java's pom.xml; one single-node KRaft broker (broker + controller, local
disk, 1 GiB heap) runs next to one release StreamHouse agent on its embedded defaults (local
store, SQLite). Kafka is measured twice, on topics of its default flush policy (acknowledged = in
the page cache) and of `flush.messages=1` (acknowledged = fsynced, StreamHouse's promise on the
local store). Every target gets the same tools in each round, the target order rotating:
- `kafka-producer-perf-test`: N records of 1 KiB, acks=all, `batch.size=262144 linger.ms=5`,
  compression none and lz4, on 6 and 120 partitions;
- `kafka-consumer-perf-test`: the same N records from the start (MB/s over the whole run, group
  join included, and over the fetch phase after it; both servers wait 0 ms for more members
  before a new group's first rebalance, `group.initial.rebalance.delay.ms=0`);
- `streamhouse bench produce` / `bench consume` (our own Rust client, far lighter than the Java
  producer, so the server shows more of what it can do on a shared machine): the same N records,
  batches and linger as the Java producer's, up to 128 requests in flight per connection;
- end to end: `streamhouse bench e2e` at 1,000 records/s for 10 s (linger 0), p50/p99/p999 from
  each record's due time to its consumption.
The first rounds (`--warmup-rounds`, the same loads) are not recorded: Kafka's JVM compiles its
hot paths during the first runs (its consume rate rose by a quarter or more over one run's
rounds), and a broker in service is warm. Per run: MB/s, the consumer's own average Fetch
latency (request sent to response read, `fetch-latency-avg`) and Fetch count, the server's CPU
seconds per GB (utime + stime from /proc), the Java producer's own CPU seconds per GB and the
machine's busy share while it produces (/proc/stat: near 100 %, the produce figure is the
machine's ceiling with this load generator, not the server's), and the server's peak RSS at the
end (`VmHWM`, which counts file pages mapped into the process, such as the agent's mapped reads
and Kafka's index files) with its peak anonymous memory (`RssAnon`, sampled). Prints medians per target and, per Kafka target, StreamHouse's median over its median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_kafka_tools as tools  # noqa: E402
import bench_s3_cost as common  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid: int) -> float:
    return tools.status_mib(pid, ("VmHWM",)).get("VmHWM", 0)


class Kafka:
    """A single-node KRaft broker in `work`."""

    def __init__(self, classpath: str, work: Path):
        self.port, controller = common.free_port(), common.free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        props = work / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={work / 'logs'}", "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=false", ""]))
        java = ["java", "-Xmx1g", "-Xms1g", "-cp", classpath]
        subprocess.run(java + ["kafka.tools.StorageTool", "format", "-t",
                               uuid.uuid4().hex[:22], "-c", str(props)],
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(java + ["kafka.Kafka", str(props)],
                                     stdout=open(work / "kafka.log", "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        common.wait_port(self.port, self.proc, "kafka")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Target:
    """One system under test: its bootstrap, server process and topic settings."""

    def __init__(self, name: str, bootstrap: str, pid: int, configs: list[str]):
        self.name, self.bootstrap, self.pid, self.configs = name, bootstrap, pid, configs


def topic_command(classpath: str, bootstrap: str, *args: str) -> None:
    tools.java(classpath, "org.apache.kafka.tools.TopicCommand",
               ["--bootstrap-server", bootstrap, *args])


def run_round(classpath, binary, target: Target, partitions, codec, records) -> dict:
    topic = f"vs-{target.name}-{partitions}-{codec}-{uuid.uuid4().hex[:6]}"
    configs = [x for c in target.configs for x in ("--config", c)]
    topic_command(classpath, target.bootstrap, "--create", "--topic", topic, "--partitions",
                  str(partitions), "--replication-factor", "1", *configs)
    memory, cpu0 = tools.memory_in_use_gb(), cpu_seconds(target.pid)
    props = ["batch.size=262144", "linger.ms=5", f"compression.type={codec}"]
    perf = tools.kafka_tools(classpath, target.bootstrap, topic, records, 1024, props)
    cpu1 = cpu_seconds(target.pid)
    gb = records * 1024 / 1e9
    topic_command(classpath, target.bootstrap, "--delete", "--topic", topic)
    return {"produce_mb_s": perf["produce"]["mb_per_s"],
            "consume_mb_s": perf["consume"]["mb_per_s"],
            "fetch_mb_s": perf["consume"]["fetch_mb_per_s"],
            "rebalance_ms": perf["consume"]["rebalance_ms"],
            "fetch_latency_ms": perf["consume"]["fetch_latency_ms"],
            "fetches": perf["consume"]["fetches"],
            "cpu_s_per_gb": (cpu1 - cpu0) / gb,
            "client_cpu_s_per_gb": perf["produce"]["client_cpu_s_per_gb"],
            "busy_pct": 100 * perf["produce"]["machine_busy"],
            "memory_in_use_gb": round(memory, 1)}


def bench_round(classpath, binary, target: Target, partitions, codec, records) -> dict:
    """The same load as `run_round`, driven by `streamhouse bench`."""
    topic = f"vs-bench-{target.name}-{partitions}-{codec}-{uuid.uuid4().hex[:6]}"
    configs = [x for c in target.configs for x in ("--config", c)]
    topic_command(classpath, target.bootstrap, "--create", "--topic", topic, "--partitions",
                  str(partitions), "--replication-factor", "1", *configs)
    time.sleep(3)  # Kafka elects the new partitions' leader; the bench does not retry that
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    base = [binary, "bench", "--bootstrap", target.bootstrap]
    children, cpu0 = os.times(), cpu_seconds(target.pid)
    subprocess.run(base + ["produce", "--topic", topic, "-q", "--json", str(out),
                           "--records", str(records), "--record-size", "1024",
                           "--batch-size", "262144", "--linger", "5ms",
                           "--compression", codec], check=True, stdout=subprocess.DEVNULL)
    after = os.times()
    produced = json.loads(out.read_text())["produce"]
    subprocess.run(base + ["consume", "--topic", topic, "-q", "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    consumed = json.loads(out.read_text())["consume"]
    cpu1 = cpu_seconds(target.pid)
    gb = records * 1024 / 1e9
    topic_command(classpath, target.bootstrap, "--delete", "--topic", topic)
    client = (after.children_user + after.children_system
              - children.children_user - children.children_system)
    return {"produce_mb_s": produced["mb_per_s"], "consume_mb_s": consumed["mb_per_s"],
            "cpu_s_per_gb": (cpu1 - cpu0) / gb, "client_cpu_s_per_gb": client / gb}


def e2e(classpath: str, binary: str, target: Target) -> dict:
    topic = f"vs-e2e-{target.name}-{uuid.uuid4().hex[:6]}"
    configs = [x for c in target.configs for x in ("--config", c)]
    topic_command(classpath, target.bootstrap, "--create", "--topic", topic, "--partitions", "6",
                  "--replication-factor", "1", *configs)
    time.sleep(3)  # Kafka elects the new partitions' leader; the bench does not retry that
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    subprocess.run([binary, "bench", "--bootstrap", target.bootstrap, "e2e", "--topic", topic,
                    "--rate", "1000", "--duration", "10s", "--record-size", "1024", "-q",
                    "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())["end_to_end_ms"]
    topic_command(classpath, target.bootstrap, "--delete", "--topic", topic)
    return {"e2e_p50_ms": report["p50"], "e2e_p99_ms": report["p99"],
            "e2e_p999_ms": report["p999"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(REPO / "target/release/streamhouse"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup-rounds", type=int, default=1,
                        help="rounds run first and not recorded (the JVM's warm-up)")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, nargs="+", default=[6, 120])
    parser.add_argument("--codecs", nargs="+", default=["none", "lz4"])
    parser.add_argument("--java-only", action="store_true",
                        help="only Kafka's Java tools (no `streamhouse bench`, no e2e run)")
    args = parser.parse_args()
    classpath = tools.kafka_classpath()
    work = Path(tempfile.mkdtemp(prefix="sh-vs-kafka-"))
    (work / "sh").mkdir()
    (work / "kafka").mkdir()
    # The same initial rebalance delay as the Kafka broker's (0 ms), so the consume runs
    # compare the same group join.
    agent = tools.Agent(args.binary, work / "sh", ["--group-initial-rebalance-delay-ms", "0"])
    kafka = Kafka(classpath, work / "kafka")
    targets = [Target("streamhouse", agent.bootstrap, agent.proc.pid, []),
               Target("kafka", kafka.bootstrap, kafka.proc.pid, []),
               Target("kafka-fsync", kafka.bootstrap, kafka.proc.pid, ["flush.messages=1"])]
    results: dict[tuple, list[dict]] = {}
    memory = {"streamhouse": tools.PeakMemory(agent.proc.pid),
              "kafka": tools.PeakMemory(kafka.proc.pid)}
    try:
        for r in range(-args.warmup_rounds, args.rounds):
            order = targets[r % 3:] + targets[:r % 3]
            warmup = r < 0
            for partitions in args.partitions:
                for codec in args.codecs:
                    for t in order:
                        row = run_round(classpath, args.binary, t, partitions, codec, args.records)
                        record(results, warmup, (t.name, partitions, codec), row)
                    for t in [] if args.java_only else order:
                        row = bench_round(classpath, args.binary, t, partitions, codec,
                                          args.records)
                        record(results, warmup, (t.name, partitions, codec, "bench"), row)
            for t in [] if args.java_only else order:
                record(results, warmup, (t.name, "e2e"), e2e(classpath, args.binary, t))
        rss = {"streamhouse": peak_rss_mib(agent.proc.pid), "kafka": peak_rss_mib(kafka.proc.pid)}
        anon = {name: sampler.stop()["RssAnon"] for name, sampler in memory.items()}
    finally:
        for sampler in memory.values():
            sampler.stop()
        agent.stop()
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, rss, anon)


def record(results: dict, warmup: bool, key: tuple, row: dict) -> None:
    """Prints a run's row; keeps it unless it is a warm-up round's."""
    print(*key, "(warm-up, not recorded)" if warmup else "", row, flush=True)
    if not warmup:
        results.setdefault(key, []).append(row)


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


# Columns of the two throughput tables: (header, row key, shown as a ratio to StreamHouse's).
TOOLS_COLUMNS = [("produce MB/s", "produce_mb_s", True), ("consume MB/s", "consume_mb_s", True),
                 ("fetch-phase MB/s", "fetch_mb_s", True),
                 ("consumer's Fetch latency ms", "fetch_latency_ms", False),
                 ("Fetches", "fetches", False), ("group join ms", "rebalance_ms", False),
                 ("server CPU s/GB", "cpu_s_per_gb", True),
                 ("producer CPU s/GB", "client_cpu_s_per_gb", False),
                 ("machine busy while producing %", "busy_pct", False)]
BENCH_COLUMNS = [("produce MB/s", "produce_mb_s", True), ("consume MB/s", "consume_mb_s", True),
                 ("server CPU s/GB", "cpu_s_per_gb", True),
                 ("bench CPU s/GB", "client_cpu_s_per_gb", False)]


def throughput_table(results: dict, tool: tuple, columns: list) -> None:
    """One row per target and load of `tool` (() for Kafka's tools, ("bench",) for ours)."""
    print("| partitions | codec | target | " + " | ".join(c[0] for c in columns) + " |")
    print("| --- " * (3 + len(columns)) + "|")
    for (name, *rest), rows in results.items():
        if len(rest) != 2 + len(tool) or tuple(rest[2:]) != tool:
            continue
        partitions, codec = rest[:2]
        sh = results[("streamhouse", partitions, codec, *tool)]
        cells = []
        for _, key, ratio in columns:
            own = median(rows, key)
            cells.append(f"{own:.1f}" if name == "streamhouse" or not ratio
                         else f"{own:.1f} (SH {median(sh, key) / own:.2f}x)")
        print(f"| {partitions} | {codec} | {name} | " + " | ".join(cells) + " |")


def report(results: dict, rss: dict, anon: dict) -> None:
    print()
    throughput_table(results, (), TOOLS_COLUMNS)
    # --java-only runs neither `streamhouse bench` nor the e2e run: no tables for them.
    if any(key[-1] == "bench" for key in results):
        print("\nThe same load from `streamhouse bench` (produce, then consume from the start):\n")
        throughput_table(results, ("bench",), BENCH_COLUMNS)
    e2e_rows = [(name, rows) for (name, *rest), rows in results.items() if rest == ["e2e"]]
    if e2e_rows:
        print("\n| target | e2e p50 / p99 / p999 ms at 1,000 records/s |")
        print("| --- | --- |")
    for name, rows in e2e_rows:
        print(f"| {name} | {median(rows, 'e2e_p50_ms'):.1f} / {median(rows, 'e2e_p99_ms'):.1f}"
              f" / {median(rows, 'e2e_p999_ms'):.1f} |")
    print(f"\npeak RSS: streamhouse {rss['streamhouse']:.0f} MiB, kafka {rss['kafka']:.0f} MiB"
          f" (anonymous memory, RssAnon sampled every 50 ms: streamhouse "
          f"{anon['streamhouse']} MiB, kafka {anon['kafka']} MiB)")


if __name__ == "__main__":
    main()
