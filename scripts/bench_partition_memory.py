#!/usr/bin/env python3
"""RSS per idle partition: what an open partition that nobody writes costs one agent.

    cargo build --release -p streamhouse
    .venv/bin/python scripts/bench_partition_memory.py [--partitions 10000] [--topics 1] [--touched 10]

One release agent on its embedded defaults (local store, SQLite; the per-agent partition cap
raised to what is asked for). The script reads the agent's RSS (VmRSS, /proc) when it is
settled, creates `--topics` topics of N partitions each (the agent's controller takes every
lease: `streamhouse_open_partitions` reaches the total), reads RSS again, then
produces 1,000 records of 1 KiB to each of a few partitions and reads RSS a third time. It prints
(RSS after creation - RSS before) / N and the cost of the written partitions over idle ones.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_kafka_tools as tools  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_partitions(agent: tools.Agent) -> int:
    text = urllib.request.urlopen(f"http://{agent.http}/metrics", timeout=30).read().decode()
    found = re.search(r"^streamhouse_open_partitions (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def settled_rss(pid: int, seconds: float = 5.0) -> int:
    """RSS once it changed by less than 1 % over `seconds` (background loops have run)."""
    before = rss_kib(pid)
    while True:
        time.sleep(seconds)
        now = rss_kib(pid)
        if abs(now - before) <= before / 100:
            return now
        before = now


def wait_open(agent: tools.Agent, want: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while open_partitions(agent) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {open_partitions(agent)} of {want} partitions opened")
        time.sleep(1)


def produce(agent: tools.Agent, topic: str, partitions: int) -> None:
    """1,000 records of 1 KiB to each of the first `partitions` partitions, acks=all."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": agent.bootstrap, "acks": "all",
                         "linger.ms": 5, "message.timeout.ms": 120_000})
    failed = []
    value = b"x" * 1024
    for p in range(partitions):
        for _ in range(1000):
            producer.produce(topic, value, partition=p,
                             on_delivery=lambda err, _msg: err and failed.append(err))
            producer.poll(0)
    producer.flush(180)
    if failed or len(producer):
        raise RuntimeError(f"produce failed: {failed[:1]} ({len(producer)} unsent)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=str(REPO / "target/release/streamhouse"))
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--topics", type=int, default=1, help="topics of --partitions each")
    ap.add_argument("--touched", type=int, default=10, help="partitions written afterwards")
    args = ap.parse_args()
    total = args.partitions * args.topics
    with tempfile.TemporaryDirectory() as work:
        agent = tools.Agent(args.binary, Path(work), [
            "--max-partitions-per-agent", str(total),
            "--max-partitions-per-cluster", str(max(total, 100_000))])
        try:
            base = settled_rss(agent.proc.pid)
            for t in range(args.topics):
                agent.create_topic(args.binary, "idle" if t == 0 else f"idle-{t}", args.partitions)
            wait_open(agent, total)
            idle = settled_rss(agent.proc.pid)
            print(f"rss_before_kib={base} rss_idle_kib={idle}", flush=True)
            produce(agent, "idle", args.touched)
            touched = settled_rss(agent.proc.pid)
        finally:
            agent.stop()
    per_idle = (idle - base) * 1024 / total
    print(f"partitions={total} rss_before_kib={base} rss_idle_kib={idle} "
          f"rss_after_produce_kib={touched}")
    print(f"rss_per_idle_partition_bytes={per_idle:.0f}")
    print(f"rss_per_written_partition_kib={(touched - idle) / max(args.touched, 1):.0f} "
          f"(1,000 records of 1 KiB each, flushed)")


if __name__ == "__main__":
    main()
