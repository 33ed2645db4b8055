#!/usr/bin/env python3
"""Peak anonymous and file-backed RSS of an agent through a produce and two consumes.

    .venv/bin/python scripts/bench_rss_kinds.py BINARY [BINARY ...] [--records 1000000] \\
        [--partitions 120]

Per binary, in turn: a fresh agent on its embedded defaults, `streamhouse bench produce` of N
records of 1 KiB (256 KiB batches, 5 ms linger) to a new topic, then two `bench consume` of it
from the start. `/proc/PID/status` is sampled every 50 ms; prints the peaks of `RssAnon` (the
agent's own memory), `RssFile` (file pages mapped into it: the local store's mapped reads) and
`VmRSS`, and the kernel's `VmHWM` (what bench_vs_kafka.py reports as peak RSS), in MiB.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_kafka_tools as tools  # noqa: E402

KINDS = ("RssAnon", "RssFile", "VmRSS", "VmHWM")


def run(binary: str, records: int, partitions: int) -> dict[str, int]:
    data_dir = Path(tempfile.mkdtemp(prefix="rss-kinds-"))
    agent = tools.Agent(binary, data_dir, ["--group-initial-rebalance-delay-ms", "0"])
    sampler = tools.PeakMemory(agent.proc.pid, KINDS)
    try:
        base = [binary, "bench", "--bootstrap", agent.bootstrap]
        subprocess.run(base + ["produce", "--topic", "rss", "--partitions", str(partitions), "-q",
                               "--records", str(records), "--record-size", "1024",
                               "--batch-size", "262144", "--linger", "5ms"],
                       check=True, stdout=subprocess.DEVNULL)
        for _ in range(2):
            subprocess.run(base + ["consume", "--topic", "rss", "-q"], check=True,
                           stdout=subprocess.DEVNULL)
    finally:
        peak = sampler.stop()
        agent.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=120)
    args = parser.parse_args()
    print("| binary | " + " | ".join(f"peak {k} MiB" for k in KINDS) + " |")
    print("| --- |" + " --- |" * len(KINDS))
    for binary in args.binaries:
        peak = run(binary, args.records, args.partitions)
        print(f"| {binary} | " + " | ".join(str(peak[k]) for k in KINDS) + " |", flush=True)


if __name__ == "__main__":
    main()
