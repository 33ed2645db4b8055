#!/usr/bin/env python3
"""Same-run comparison of `streamhouse bench` with external load generators (BENCHMARKS.md).

Builds the release binary, starts one agent on a fresh data directory and, in rounds that
alternate which generator goes first, measures against it:
  produce  `streamhouse bench produce` vs scripts/bench_kafka.py --phases produce (librdkafka
           through confluent-kafka's produce_batch): the same record count and size,
           partitions (round-robin, no keys), acks=all, compression, linger, batch size and
           in-flight window. Figure: MB/s of acknowledged records.
  latency  `streamhouse bench e2e` vs bench_kafka.py --phases latency: records due at the same
           fixed rate, linger 0, a tailing consumer, latency from each record's due time.
           Figures: produce-ack and end-to-end p50/p99.
  consume  `streamhouse bench consume` vs kcat (librdkafka's C client, -f '' so it prints
           nothing), both reading the same topic from the beginning with the same fetch sizes.
           Figure: MB/s over each process's wall time (start-up included for both); the bench's
           own figure (first fetch to last record) is shown too. Python is not used here: its
           per-message cost made it the bottleneck (~380 MB/s) rather than the agent.
The agent's own request counters (/metrics) give records per Produce request for both.
Prints medians over the rounds and the ratios built-in / external; --json keeps every figure.
Usage: .venv/bin/python scripts/bench_compare.py [--rounds 3] [--records 500000] [--no-build]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "streamhouse")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
BENCH_KAFKA = os.path.join(ROOT, "scripts", "bench_kafka.py")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--records", type=int, default=500_000, help="records per produce run")
    p.add_argument("--record-size", type=int, default=1024)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=1_000_000)
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--in-flight", type=int, default=5)
    p.add_argument("--compression", default="none")
    p.add_argument("--rate", type=int, default=1000, help="records/s of the latency runs")
    p.add_argument("--seconds", type=int, default=10, help="length of the latency runs")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--json", help="write every figure here")
    return p.parse_args(argv)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """One release agent on a fresh data directory."""

    def __init__(self, workdir):
        self.kafka, self.http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        self.log = open(os.path.join(workdir, "agent.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", os.path.join(workdir, "data"),
             "--kafka-addr", self.kafka, "--http-addr", self.http],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(self.kafka.split(":"), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("agent did not start; see agent.log")

    def requests(self, api):
        text = urllib.request.urlopen(f"http://{self.http}/metrics", timeout=10).read().decode()
        m = re.search(r'^streamhouse_kafka_requests_total\{api="%s"\} (\S+)$' % api, text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def run(cmd):
    """Runs `cmd`; returns (stdout, wall seconds)."""
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout, time.perf_counter() - start


def builtin(agent, mode, args, workdir):
    path = os.path.join(workdir, "report.json")
    _, wall = run([BIN, "--bootstrap", agent.kafka, "bench", mode, "-q", "--json", path] + args)
    with open(path) as f:
        report = json.load(f)
    report["wall_s"] = wall
    return report


def external(agent, phases, args):
    out, _ = run([PYTHON, BENCH_KAFKA, "--bootstrap", agent.kafka, "--phases", phases] + args)
    return json.loads(out)


def producer_flags(a):
    """Settings both producers take under the same flag names."""
    return ["--partitions", str(a.partitions), "--record-size", str(a.record_size),
            "--batch-size", str(a.batch_size), "--in-flight", str(a.in_flight),
            "--compression", a.compression]


def produce_round(agent, a, r, workdir):
    flags = producer_flags(a)
    figures = {}

    def builtin_run():
        before = agent.requests("Produce")
        rep = builtin(agent, "produce", ["--topic", f"sh-p{r}", "--records", str(a.records),
                                         "--linger", f"{a.linger_ms}ms"] + flags,
                      workdir)
        figures["builtin"] = {"mb_per_s": rep["produce"]["mb_per_s"],
                              "records_per_request": a.records / (agent.requests("Produce") - before),
                              "report": rep}

    def external_run():
        before = agent.requests("Produce")
        rep = external(agent, "produce", ["--topic", f"py-p{r}", "--count", str(a.records),
                                          "--linger-ms", str(a.linger_ms)] + flags)
        figures["external"] = {"mb_per_s": rep["produce"]["mb_per_s"],
                               "records_per_request": a.records / (agent.requests("Produce") - before),
                               "report": rep}

    order = [builtin_run, external_run] if r % 2 == 0 else [external_run, builtin_run]
    for step in order:
        step()
    return figures


def latency_round(agent, a, r, workdir):
    flags = producer_flags(a)
    figures = {}

    def builtin_run():
        rep = builtin(agent, "e2e", ["--topic", f"sh-l{r}", "--rate", str(a.rate), "--duration",
                                     f"{a.seconds}s", "--linger", "0ms"] + flags,
                      workdir)
        figures["builtin"] = {"ack": rep["produce_ack_ms"], "e2e": rep["end_to_end_ms"],
                              "report": rep}

    def external_run():
        rep = external(agent, "latency", ["--topic", f"py-l{r}", "--rate", str(a.rate),
                                          "--latency-seconds", str(a.seconds),
                                          "--latency-linger-ms", "0"] + flags)
        lat = rep["latency"]
        figures["external"] = {"ack": lat["produce_ack_ms"], "e2e": lat["end_to_end_ms"],
                               "report": rep}

    order = [builtin_run, external_run] if r % 2 == 0 else [external_run, builtin_run]
    for step in order:
        step()
    return figures


def consume_round(agent, a, r, workdir, topic):
    figures = {}

    def builtin_run():
        rep = builtin(agent, "consume", ["--topic", topic, "--fetch-max-bytes", "1048576"],
                      workdir)
        c = rep["consume"]
        figures["builtin"] = {"mb_per_s": round(c["bytes"] / rep["wall_s"] / 1e6, 2),
                              "own_mb_per_s": c["mb_per_s"], "bytes": c["bytes"],
                              "report": rep}

    def external_run():
        # The same fetch settings as the built-in consumer (librdkafka's defaults but the wait).
        _, wall = run(["kcat", "-b", agent.kafka, "-C", "-t", topic, "-o", "beginning", "-e",
                       "-q", "-f", "", "-X", "fetch.wait.max.ms=100",
                       "-X", "max.partition.fetch.bytes=1048576",
                       "-X", "fetch.max.bytes=52428800"])
        figures["external"] = {"wall_s": wall}

    order = [builtin_run, external_run] if r % 2 == 0 else [external_run, builtin_run]
    for step in order:
        step()
    # kcat prints nothing, so its byte count is the topic's, which bench consume just read.
    figures["external"]["mb_per_s"] = round(
        figures["builtin"]["bytes"] / figures["external"]["wall_s"] / 1e6, 2)
    return figures


def median(rounds, who, *path):
    values = []
    for fig in rounds:
        v = fig[who]
        for key in path:
            v = v[key]
        values.append(v)
    return statistics.median(values)


def main(argv=None):
    a = parse_args(argv)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "streamhouse"], cwd=ROOT, check=True)
    workdir = tempfile.mkdtemp(prefix="bench-compare-")
    agent = Agent(workdir)
    results = {"settings": vars(a), "produce": [], "latency": [], "consume": []}
    try:
        for r in range(a.rounds):
            results["produce"].append(produce_round(agent, a, r, workdir))
            print(f"round {r}: produce done", file=sys.stderr)
        for r in range(a.rounds):
            results["latency"].append(latency_round(agent, a, r, workdir))
            print(f"round {r}: latency done", file=sys.stderr)
        for r in range(a.rounds):
            results["consume"].append(consume_round(agent, a, r, workdir, "sh-p0"))
            print(f"round {r}: consume done", file=sys.stderr)
    finally:
        agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(a, results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


def print_table(a, results):
    rows = []

    def row(name, rounds, unit, *path, judge=True):
        b, e = median(rounds, "builtin", *path), median(rounds, "external", *path)
        ratio = b / e if e else float("nan")
        verdict = ("within 20%" if 0.8 <= ratio <= 1.2 else "OUTSIDE 20%") if judge else ""
        rows.append((name, f"{b:.2f} {unit}", f"{e:.2f} {unit}", f"{ratio:.2f}", verdict))

    produce, latency, consume = results["produce"], results["latency"], results["consume"]
    row("produce throughput", produce, "MB/s", "mb_per_s")
    row("records per Produce request", produce, "", "records_per_request", judge=False)
    for kind, label in (("ack", "produce-ack"), ("e2e", "end-to-end")):
        for q in ("p50", "p99"):
            row(f"{label} {q} at {a.rate}/s", latency, "ms", kind, q)
    row("consume throughput (wall)", consume, "MB/s", "mb_per_s")
    print(f"medians over {a.rounds} rounds; {a.records} x {a.record_size} B records, "
          f"{a.partitions} partitions, linger {a.linger_ms} ms, batch {a.batch_size} B, "
          f"in-flight {a.in_flight}, compression {a.compression}, acks=all")
    print(f"{'measure':<34} {'streamhouse bench':>18} {'external':>14} {'ratio':>6}")
    for name, b, e, ratio, verdict in rows:
        print(f"{name:<34} {b:>18} {e:>14} {ratio:>6}  {verdict}")
    own = statistics.median(fig["builtin"]["own_mb_per_s"] for fig in consume)
    print(f"(bench consume's own figure, first fetch to last record: {own:.2f} MB/s)")
    for name, rounds, path in (("produce MB/s", produce, ("mb_per_s",)),
                               ("ack p50 ms", latency, ("ack", "p50")),
                               ("consume MB/s", consume, ("mb_per_s",))):
        def pick(fig, who):
            v = fig[who]
            for k in path:
                v = v[k]
            return f"{v:.1f}"
        per = ", ".join(f"{pick(f, 'builtin')}/{pick(f, 'external')}" for f in rounds)
        print(f"each round, {name} (bench/external): {per}")


if __name__ == "__main__":
    main()
