#!/usr/bin/env python3
"""Whether a long-lived agent keeps up with its consolidation backlog under sustained load.

    .venv/bin/python scripts/bench_backlog.py [--binary target/release/streamhouse] \\
        [--rounds 6] [--records 1000000] [--partitions 120] [--idle 15] [--kafka]

One release agent on its embedded defaults, kept across rounds (as `bench_vs_kafka.py` keeps
it). Each round: a new topic, `streamhouse bench produce` of N records of 1 KiB and `bench
consume` of them, then S seconds idle. Prints per round the produce and consume MB/s, the
agent's CPU seconds in the produce+consume window and in the idle window (/proc), the data
directory's size, the machine's memory in use (MemTotal - MemFree: on some VMs new pages past a
threshold are much slower to fill, see scripts/bench_machine_memory.sh) and the consolidation
backlog the agent's /metrics report at the end of the idle window (bytes and age of slices
still in shared flush objects past the minimum age).

With --kafka, the same rounds against a single-node Kafka broker (bench_vs_kafka.py's, default
flush policy) in place of the agent: its page cache grows as the agent's does, so a slowdown
from the machine's memory shows in both (it has no consolidation: no backlog columns).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_kafka_tools as tools  # noqa: E402
from bench_ab import counters  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default="target/release/streamhouse")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=120)
    parser.add_argument("--idle", type=float, default=15.0)
    parser.add_argument("--kafka", action="store_true",
                        help="run the rounds against a Kafka broker instead of the agent")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="backlog-"))
    server = Broker(args, data_dir)
    print("| round | produce MB/s | consume MB/s | server CPU s (produce+consume) | server CPU s "
          f"idle {args.idle:g} s | data dir MB | memory in use GB | backlog MB | backlog age s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for n in range(args.rounds):
            topic = f"backlog-{n}"
            server.create_topic(topic, args.partitions)
            cpu0 = counters(server.pid)[0]
            run = tools.builtin(args.binary, server, topic, args.records, 1024)
            cpu1 = counters(server.pid)[0]
            time.sleep(args.idle)
            cpu2 = counters(server.pid)[0]
            size = subprocess.run(["du", "-sm", str(data_dir)], capture_output=True,
                                  text=True, check=True).stdout.split()[0]
            print(f"| {n} | {run['produce']['produce']['mb_per_s']:.1f} "
                  f"| {run['consume']['consume']['mb_per_s']:.1f} | {cpu1 - cpu0:.2f} "
                  f"| {cpu2 - cpu1:.2f} | {size} | {tools.memory_in_use_gb():.1f} "
                  f"| {server.backlog()} |", flush=True)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


class Broker:
    """The server the rounds run against: the agent on its defaults, or Kafka (--kafka)."""

    def __init__(self, args: argparse.Namespace, data_dir: Path):
        self.binary = args.binary
        if args.kafka:
            import bench_vs_kafka as vs  # noqa: E402  (Kafka's classpath is fetched on demand)
            self.classpath = tools.kafka_classpath()
            self.kafka, self.agent = vs.Kafka(self.classpath, data_dir), None
            self.pid, self.bootstrap = self.kafka.proc.pid, self.kafka.bootstrap
        else:
            self.kafka, self.agent = None, tools.Agent(args.binary, data_dir)
            self.pid, self.bootstrap = self.agent.proc.pid, self.agent.bootstrap

    def create_topic(self, topic: str, partitions: int) -> None:
        if self.agent:
            self.agent.create_topic(self.binary, topic, partitions)
            return
        import bench_vs_kafka as vs  # noqa: E402
        vs.topic_command(self.classpath, self.bootstrap, "--create", "--topic", topic,
                         "--partitions", str(partitions), "--replication-factor", "1")
        time.sleep(3)  # Kafka elects the new partitions' leader; the bench does not retry that

    def backlog(self) -> str:
        """The agent's consolidation backlog, MB and age (two table cells)."""
        if not self.agent:
            return "- | -"
        text = self.agent.metrics()
        return (f"{tools.metric(text, 'streamhouse_consolidation_backlog_bytes') / 1e6:.0f} "
                f"| {tools.metric(text, 'streamhouse_consolidation_backlog_age_seconds'):.0f}")

    def stop(self) -> None:
        (self.agent or self.kafka).stop()


if __name__ == "__main__":
    main()
