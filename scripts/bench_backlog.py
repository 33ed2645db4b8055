#!/usr/bin/env python3
"""Whether a long-lived agent keeps up with its consolidation backlog under sustained load.

    .venv/bin/python scripts/bench_backlog.py [--binary target/release/streamhouse] \\
        [--rounds 6] [--records 1000000] [--partitions 120] [--idle 15]

One release agent on its embedded defaults, kept across rounds (as `bench_vs_kafka.py` keeps
it). Each round: a new topic, `streamhouse bench produce` of N records of 1 KiB and `bench
consume` of them, then S seconds idle. Prints per round the produce and consume MB/s, the
agent's CPU seconds in the produce+consume window and in the idle window (/proc), the data
directory's size, the machine's memory in use (MemTotal - MemFree: on some VMs new pages past a
threshold are much slower to fill, see scripts/bench_machine_memory.sh) and the consolidation
backlog the agent's /metrics report at the end of the idle window (bytes and age of slices
still in shared flush objects past the minimum age).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_kafka_tools as tools  # noqa: E402
from bench_ab import counters  # noqa: E402


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default="target/release/streamhouse")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=120)
    parser.add_argument("--idle", type=float, default=15.0)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="backlog-"))
    agent = tools.Agent(args.binary, data_dir)
    print("| round | produce MB/s | consume MB/s | agent CPU s (produce+consume) | agent CPU s "
          f"idle {args.idle:g} s | data dir MB | memory in use GB | backlog MB | backlog age s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for n in range(args.rounds):
            topic = f"backlog-{n}"
            agent.create_topic(args.binary, topic, args.partitions)
            cpu0 = counters(agent.proc.pid)[0]
            run = tools.builtin(args.binary, agent, topic, args.records, 1024)
            cpu1 = counters(agent.proc.pid)[0]
            time.sleep(args.idle)
            cpu2 = counters(agent.proc.pid)[0]
            text = urllib.request.urlopen(f"http://{agent.http}/metrics", timeout=10).read()
            text = text.decode()
            size = subprocess.run(["du", "-sm", str(data_dir)], capture_output=True,
                                  text=True, check=True).stdout.split()[0]
            print(f"| {n} | {run['produce']['produce']['mb_per_s']:.1f} "
                  f"| {run['consume']['consume']['mb_per_s']:.1f} | {cpu1 - cpu0:.2f} "
                  f"| {cpu2 - cpu1:.2f} | {size} | {tools.memory_in_use_gb():.1f} "
                  f"| {metric(text, 'streamhouse_consolidation_backlog_bytes') / 1e6:.0f} "
                  f"| {metric(text, 'streamhouse_consolidation_backlog_age_seconds'):.0f} |",
                  flush=True)
    finally:
        agent.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
