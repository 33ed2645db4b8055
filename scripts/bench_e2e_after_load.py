#!/usr/bin/env python3
"""End-to-end latency right after a burst of load, for several agent builds side by side.

    .venv/bin/python scripts/bench_e2e_after_load.py NAME=BINARY[,--serve-flag=V...] \\
        [NAME=BINARY ...] [--rounds 4] [--records 300000]

One agent per build on its embedded defaults (plus the `serve` flags given after its binary),
kept across rounds. Each round, for each build in turn: `streamhouse bench produce` of N
records of 1 KiB to a new 6-partition topic, the topic deleted, then `bench e2e` at 1,000
records/s for 10 s on another new topic (what bench_vs_kafka.py's end-to-end run follows).
Prints each round's p50 / p99 / p999 in ms, the machine's memory in use before it (see
scripts/bench_machine_memory.sh), and from the agent's /metrics over the e2e run: flush
cycles and object PUTs that took over 50 ms, the flush cycles' steps that did (upload, waiting
for the turn, metadata commit, cache write-through), the seconds all cycles took, in all and
per step, and consolidation rounds run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_kafka_tools as tools  # noqa: E402


PHASES = ["upload", "turn", "commit", "cache"]
SLOW = [("flushes", "streamhouse_flush_duration_seconds", ""),
        ("puts", "streamhouse_object_store_request_duration_seconds", 'op="put",'),
        *((phase, "streamhouse_flush_phase_duration_seconds", f'phase="{phase}",')
          for phase in PHASES)]


def counts(agent: tools.Agent) -> dict:
    """Flush cycles and PUTs so far, all and within 50 ms, and consolidation rounds."""
    text = agent.metrics()

    def value(series: str) -> float:
        found = tools.metric(text, series)
        return 0.0 if math.isnan(found) else found  # absent: none counted yet

    out = {"rounds": value("streamhouse_consolidation_rounds_total")}
    for name, metric, label in SLOW:
        out[name] = value(f'{metric}_bucket{{{label}le="+Inf"}}')
        out[name + "_fast"] = value(f'{metric}_bucket{{{label}le="0.05"}}')
        out[name + "_sum"] = value(f'{metric}_sum{{{label.rstrip(",")}}}' if label
                                   else f"{metric}_sum")
    return out


def one_round(binary: str, agent: tools.Agent, n: int, records: int) -> dict:
    base = [binary, "bench", "--bootstrap", agent.bootstrap]
    load = f"load-{n}"
    agent.create_topic(binary, load, 6)
    subprocess.run(base + ["produce", "--topic", load, "-q", "--records", str(records),
                           "--record-size", "1024"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([binary, "--bootstrap", agent.bootstrap, "topic", "delete", load],
                   check=True, stdout=subprocess.DEVNULL)
    topic = f"e2e-{n}"
    agent.create_topic(binary, topic, 6)
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    before = counts(agent)
    subprocess.run(base + ["e2e", "--topic", topic, "--rate", "1000", "--duration", "10s",
                           "--record-size", "1024", "-q", "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    after = counts(agent)
    delta = {k: after[k] - before[k] for k in after}
    report = json.loads(out.read_text())["end_to_end_ms"]
    report["slow"] = {name: delta[name] - delta[name + "_fast"] for name, _, _ in SLOW}
    report["seconds"] = {name: delta[name + "_sum"] for name, _, _ in SLOW}
    report["rounds"] = delta["rounds"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("builds", nargs="+", help="NAME=BINARY[,--serve-flag=V...]")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--records", type=int, default=300_000)
    args = parser.parse_args()
    builds, flags = [], []
    for build in args.builds:
        name, spec = build.split("=", 1)
        binary, *extra = spec.split(",")
        builds.append((name, binary))
        flags.append(extra)
    dirs = [Path(tempfile.mkdtemp(prefix="e2e-after-load-")) for _ in builds]
    agents = [tools.Agent(binary, d, extra)
              for (_, binary), d, extra in zip(builds, dirs, flags)]
    print("| round | build | memory in use GB | e2e p50 / p99 / p999 ms | flushes over 50 ms "
          f"| PUTs over 50 ms | flush steps over 50 ms ({' / '.join(PHASES)}) "
          f"| flush seconds in all, and per step | consolidation rounds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for n in range(args.rounds):
            for (name, binary), agent in zip(builds, agents):
                memory = tools.memory_in_use_gb()
                e2e = one_round(binary, agent, n, args.records)
                print(f"| {n} | {name} | {memory:.1f} | {e2e['p50']:.1f} / {e2e['p99']:.1f} / "
                      f"{e2e['p999']:.1f} | {e2e['slow']['flushes']:.0f} "
                      f"| {e2e['slow']['puts']:.0f} "
                      f"| {' / '.join(str(round(e2e['slow'][p])) for p in PHASES)} "
                      f"| {e2e['seconds']['flushes']:.2f}: "
                      f"{' / '.join('%.2f' % e2e['seconds'][p] for p in PHASES)} "
                      f"| {e2e['rounds']:.0f} |", flush=True)
    finally:
        for agent in agents:
            agent.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
