#!/usr/bin/env python3
"""Same-run comparison of `streamhouse bench` with external load generators (BENCHMARKS.md).

Builds the release binary, starts one agent on a fresh data directory and, in rounds that
rotate which generator goes first, measures against it:
  produce  `streamhouse bench produce` vs librdkafka: scripts/bench_kafka.py --phases produce
           (confluent-kafka's produce_batch) and, with --rdkafka-performance, librdkafka's own
           C load generator. The same record count and size, partitions, acks=all,
           compression, linger, batch size and in-flight window. Figure: MB/s acknowledged.
  latency  `streamhouse bench e2e` vs bench_kafka.py --phases latency: records due at the same
           fixed rate, linger 0, a tailing consumer, latency from each record's due time.
           Figures: produce-ack and end-to-end p50/p99.
  consume  `streamhouse bench consume` vs kcat (librdkafka's C client, -f '' so it prints
           nothing), both reading the same topic from the beginning with the same fetch sizes.
           Figure: MB/s over each process's wall time (start-up included for both). Python is
           not used here: its per-message cost made it the bottleneck (~380 MB/s), not the agent.
The agent's request counters (/metrics) give records per Produce request for each producer and,
during the latency runs, the share of Produce requests the agent itself took over 50 ms to
answer (so a latency tail can be told to be the agent's); each generator's CPU time is
measured. With --pin the agent runs on CPU 0 and the generators on
the other CPUs, so a generator's own CPU use cannot take time from the agent.
Prints per measure the medians over the rounds and the median of the per-round ratios
built-in / external (each round runs all generators back to back, so a ratio compares like
load); --json keeps every figure.
rdkafka_performance is examples/rdkafka_performance.c of the librdkafka sources, built against
the library confluent-kafka bundles, e.g. in a librdkafka checkout:
  gcc -O2 -I src -o rdkafka_performance examples/rdkafka_performance.c \\
      .venv/lib/python3*/site-packages/confluent_kafka.libs/librdkafka-*.so.1
Usage: .venv/bin/python scripts/bench_compare.py [--rounds 3] [--records 1000000] [--pin]
           [--rdkafka-performance PATH]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
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
BUILTIN = "streamhouse bench"
# The topic the consume rounds read: the built-in bench's first produce run.
CONSUMED = "sh-p0"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--records", type=int, default=1_000_000, help="records per produce run")
    p.add_argument("--record-size", type=int, default=1024)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=1_000_000)
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--in-flight", type=int, default=128)
    p.add_argument("--compression", default="none")
    p.add_argument("--rate", type=int, default=1000, help="records/s of the latency runs")
    p.add_argument("--seconds", type=int, default=10, help="length of the latency runs")
    p.add_argument("--rdkafka-performance", help="path of a built rdkafka_performance")
    p.add_argument("--pin", action="store_true",
                   help="agent on CPU 0, generators on the others (needs 2 CPUs or more)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--json", help="write every figure here")
    return p.parse_args(argv)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Command prefixes placing the agent and the generators on CPUs (set by --pin).
AGENT_CPUS: list[str] = []
CLIENT_CPUS: list[str] = []


def pin():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    AGENT_CPUS[:] = ["taskset", "-c", str(cpus[0])]
    CLIENT_CPUS[:] = ["taskset", "-c", ",".join(map(str, cpus[1:]))]


class Agent:
    """One release agent on a fresh data directory."""

    def __init__(self, workdir):
        self.kafka, self.http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        self.log = open(os.path.join(workdir, "agent.log"), "w")
        self.proc = subprocess.Popen(
            AGENT_CPUS + [BIN, "serve", "--data-dir", os.path.join(workdir, "data"),
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

    def metrics(self):
        return urllib.request.urlopen(f"http://{self.http}/metrics", timeout=10).read().decode()

    def produce_requests(self):
        m = re.search(r'^streamhouse_kafka_requests_total\{api="Produce"\} (\S+)$',
                      self.metrics(), re.M)
        return float(m.group(1)) if m else 0.0

    def slow_produces(self):
        """(Produce requests the agent took over 50 ms to answer, all Produce requests) so
        far, from its own duration histogram."""
        text = self.metrics()

        def count(name, labels):
            m = re.search(r'^streamhouse_kafka_request_duration_seconds_%s\{%s\} (\S+)$'
                          % (name, labels), text, re.M)
            return float(m.group(1)) if m else 0.0

        total = count("count", 'api="Produce"')
        return total - count("bucket", 'api="Produce",le="0.05"'), total

    def cli(self, *args):
        run([BIN, "--bootstrap", self.kafka] + list(args))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def run(cmd, env=None, exit_codes=(0,)):
    """Runs `cmd`; returns (stdout, wall seconds, CPU seconds of the process and its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(CLIENT_CPUS + cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if out.returncode not in exit_codes:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {out.returncode}:\n{tail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.stdout, wall, round(cpu, 3)


def builtin(agent, mode, args, workdir):
    path = os.path.join(workdir, "report.json")
    _, wall, cpu = run([BIN, "--bootstrap", agent.kafka, "bench", mode, "-q", "--json", path]
                       + args)
    with open(path) as f:
        report = json.load(f)
    report["wall_s"], report["cpu_s"] = wall, cpu
    return report


def python_generator(agent, phases, args):
    out, _, cpu = run([PYTHON, BENCH_KAFKA, "--bootstrap", agent.kafka, "--phases", phases]
                      + args)
    report = json.loads(out)
    report["cpu_s"] = cpu
    return report


def producer_flags(a):
    """Settings the built-in bench and bench_kafka.py take under the same flag names."""
    return ["--partitions", str(a.partitions), "--record-size", str(a.record_size),
            "--batch-size", str(a.batch_size), "--in-flight", str(a.in_flight),
            "--compression", a.compression]


def in_rounds(r, runs):
    """Runs `runs` (name -> function returning figures), starting with a different one each
    round; returns name -> figures."""
    names = sorted(runs)
    shift = r % len(names)
    return {name: runs[name]() for name in names[shift:] + names[:shift]}


def produce_round(agent, a, r, workdir):
    def counted(topic, fn):
        before = agent.produce_requests()
        figures = fn(topic)
        figures["records_per_request"] = a.records / (agent.produce_requests() - before)
        if topic != CONSUMED:
            agent.cli("topic", "delete", topic)  # bounds the disk used by the rounds
        return figures

    def bench(topic):
        rep = builtin(agent, "produce", ["--topic", topic, "--records", str(a.records),
                                         "--linger", f"{a.linger_ms}ms"] + producer_flags(a),
                      workdir)
        return {"mb_per_s": rep["produce"]["mb_per_s"], "cpu_s": rep["cpu_s"], "report": rep}

    def python(topic):
        rep = python_generator(agent, "produce", ["--topic", topic, "--count", str(a.records),
                                                  "--linger-ms", str(a.linger_ms)]
                               + producer_flags(a))
        return {"mb_per_s": rep["produce"]["mb_per_s"], "cpu_s": rep["cpu_s"], "report": rep}

    def rdkafka_performance(topic):
        agent.cli("topic", "create", topic, "--partitions", str(a.partitions))
        env = dict(os.environ, LD_LIBRARY_PATH=bundled_librdkafka_dir())
        out, _, cpu = run([a.rdkafka_performance, "-P", "-t", topic, "-b", agent.kafka,
                           "-s", str(a.record_size), "-c", str(a.records), "-a", "-1", "-q",
                           "-z", a.compression, "-X", f"linger.ms={a.linger_ms}",
                           "-X", f"batch.size={a.batch_size}",
                           "-X", f"max.in.flight={a.in_flight}",
                           "-X", "queue.buffering.max.messages=1000000"], env=env,
                          exit_codes=(0, 1))
        # It exits 1 when its count of produced records lags its delivery reports at the end
        # (seen as "999999 messages produced ..., 1000000 delivered"); the reports decide.
        last = [line for line in out.splitlines() if "delivered" in line][-1]
        done = re.search(r"(\d+) delivered \(offset \d+, (\d+) failed\)", last)
        if not done or int(done.group(1)) != a.records or int(done.group(2)) != 0:
            raise RuntimeError(f"rdkafka_performance did not deliver everything: {last}")
        return {"mb_per_s": float(re.search(r"([0-9.]+) MB/s", last).group(1)), "cpu_s": cpu,
                "report": last}

    runs = {BUILTIN: lambda: counted(f"sh-p{r}", bench),
            "librdkafka (Python)": lambda: counted(f"py-p{r}", python)}
    if a.rdkafka_performance:
        runs["librdkafka (C)"] = lambda: counted(f"c-p{r}", rdkafka_performance)
    return in_rounds(r, runs)


def bundled_librdkafka_dir():
    libs = glob.glob(os.path.join(ROOT, ".venv", "lib", "python3*", "site-packages",
                                  "confluent_kafka.libs"))
    if not libs:
        raise SystemExit("confluent-kafka's bundled librdkafka not found in .venv")
    return libs[0]


def latency_round(agent, a, r, workdir):
    def agent_view(fn):
        # The agent's own timing of the same requests tells its delays from the client's.
        slow0, total0 = agent.slow_produces()
        figures = fn()
        slow1, total1 = agent.slow_produces()
        figures["agent_slow_pct"] = round(100 * (slow1 - slow0) / max(1, total1 - total0), 2)
        return figures

    def bench():
        rep = builtin(agent, "e2e", ["--topic", f"sh-l{r}", "--rate", str(a.rate), "--duration",
                                     f"{a.seconds}s", "--linger", "0ms"] + producer_flags(a),
                      workdir)
        return {"ack": rep["produce_ack_ms"], "e2e": rep["end_to_end_ms"], "report": rep}

    def python():
        rep = python_generator(agent, "latency", ["--topic", f"py-l{r}", "--rate", str(a.rate),
                                                  "--latency-seconds", str(a.seconds),
                                                  "--latency-linger-ms", "0"]
                               + producer_flags(a))
        lat = rep["latency"]
        return {"ack": lat["produce_ack_ms"], "e2e": lat["end_to_end_ms"], "report": rep}

    return in_rounds(r, {BUILTIN: lambda: agent_view(bench),
                         "librdkafka (Python)": lambda: agent_view(python)})


def consume_round(agent, r, workdir, topic):
    def bench():
        rep = builtin(agent, "consume", ["--topic", topic, "--fetch-max-bytes", "1048576"],
                      workdir)
        c = rep["consume"]
        return {"mb_per_s": round(c["bytes"] / rep["wall_s"] / 1e6, 2),
                "own_mb_per_s": c["mb_per_s"], "bytes": c["bytes"], "cpu_s": rep["cpu_s"],
                "report": rep}

    def kcat():
        # The built-in consumer's fetch settings (librdkafka's defaults but the wait).
        _, wall, cpu = run(["kcat", "-b", agent.kafka, "-C", "-t", topic, "-o", "beginning",
                            "-e", "-q", "-f", "", "-X", "fetch.wait.max.ms=100",
                            "-X", "max.partition.fetch.bytes=1048576",
                            "-X", "fetch.max.bytes=52428800"])
        return {"wall_s": wall, "cpu_s": cpu}

    figures = in_rounds(r, {BUILTIN: bench, "kcat (C)": kcat})
    # kcat prints nothing, so its byte count is the topic's, which bench consume just read.
    k = figures["kcat (C)"]
    k["mb_per_s"] = round(figures[BUILTIN]["bytes"] / k["wall_s"] / 1e6, 2)
    return figures


def pick(fig, path):
    for key in path:
        fig = fig[key]
    return fig


def main(argv=None):
    a = parse_args(argv)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "streamhouse"], cwd=ROOT, check=True)
    if a.pin:
        pin()
    workdir = tempfile.mkdtemp(prefix="bench-compare-")
    agent = Agent(workdir)
    results = {"settings": vars(a), "pinned": bool(a.pin), "produce": [], "latency": [],
               "consume": [], "load_average": {"start": os.getloadavg()}}
    try:
        for r in range(a.rounds):
            results["produce"].append(produce_round(agent, a, r, workdir))
            print(f"round {r}: produce done", file=sys.stderr)
        for r in range(a.rounds):
            results["latency"].append(latency_round(agent, a, r, workdir))
            print(f"round {r}: latency done", file=sys.stderr)
        for r in range(a.rounds):
            results["consume"].append(consume_round(agent, r, workdir, CONSUMED))
            print(f"round {r}: consume done", file=sys.stderr)
    finally:
        results["load_average"]["end"] = os.getloadavg()
        agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(a, results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


def print_table(a, results):
    load = results["load_average"]
    print(f"medians over {a.rounds} rounds; {a.records} x {a.record_size} B records, "
          f"{a.partitions} partitions, linger {a.linger_ms} ms, batch {a.batch_size} B, "
          f"in-flight {a.in_flight}, compression {a.compression}, acks=all; load average "
          f"{load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end; agent and "
          f"generators {'pinned apart (--pin)' if a.pin else 'sharing all CPUs'}")
    print(f"{'measure':<30} {BUILTIN:>18}  {'external':<20} {'value':>12} {'ratio':>6}")

    def row(name, rounds, unit, path, judge=True):
        ours = statistics.median(pick(fig[BUILTIN], path) for fig in rounds)
        first = True
        for other in sorted(k for k in rounds[0] if k != BUILTIN):
            theirs = statistics.median(pick(fig[other], path) for fig in rounds)
            ratio = statistics.median(pick(fig[BUILTIN], path) / pick(fig[other], path)
                                      for fig in rounds)
            verdict = ("within 20%" if 0.8 <= ratio <= 1.2 else "OUTSIDE 20%") if judge else ""
            label, value = (name, f"{ours:.2f} {unit}") if first else ("", "")
            print(f"{label:<30} {value:>18}  {other:<20} {theirs:>9.2f} {unit:<2} "
                  f"{ratio:>6.2f}  {verdict}")
            first = False

    produce, latency, consume = results["produce"], results["latency"], results["consume"]
    row("produce throughput", produce, "MB/s", ["mb_per_s"])
    row("records per Produce request", produce, "", ["records_per_request"], judge=False)
    row("producer CPU", produce, "s", ["cpu_s"], judge=False)
    for kind, label in (("ack", "produce-ack"), ("e2e", "end-to-end")):
        for q in ("p50", "p99"):
            row(f"{label} {q} at {a.rate}/s", latency, "ms", [kind, q])
    row("consume throughput (wall)", consume, "MB/s", ["mb_per_s"])
    row("consumer CPU", consume, "s", ["cpu_s"], judge=False)
    own = statistics.median(fig[BUILTIN]["own_mb_per_s"] for fig in consume)
    print(f"(bench consume's own figure, first fetch to last record: {own:.2f} MB/s)")
    for name, rounds, path in (("produce MB/s", produce, ["mb_per_s"]),
                               ("ack p50 ms", latency, ["ack", "p50"]),
                               ("ack p99 ms", latency, ["ack", "p99"]),
                               ("% of Produce requests the agent took > 50 ms over", latency,
                                ["agent_slow_pct"]),
                               ("e2e p99 ms", latency, ["e2e", "p99"]),
                               ("consume MB/s", consume, ["mb_per_s"])):
        names = [BUILTIN] + sorted(k for k in rounds[0] if k != BUILTIN)
        per = ", ".join("/".join(f"{pick(fig[n], path):.1f}" for n in names) for fig in rounds)
        print(f"each round, {name} ({' / '.join(names)}): {per}")


if __name__ == "__main__":
    main()
