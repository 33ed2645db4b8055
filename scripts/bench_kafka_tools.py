#!/usr/bin/env python3
"""Kafka's own perf tools against StreamHouse, beside the built-in bench, in one run.

    .venv/bin/python scripts/bench_kafka_tools.py [--binary target/release/streamhouse]
        [--records 500000] [--record-size 1024] [--partitions 6]

One agent on its embedded defaults (local store, SQLite) in a scratch directory. For each
client, the same workload on a fresh topic: produce N records of S bytes with acks=all as fast as
acknowledgements allow, then consume them all from the start. Clients: `streamhouse bench`
(our own pipelined Kafka client) and Apache Kafka's `kafka-producer-perf-test` /
`kafka-consumer-perf-test` (`org.apache.kafka.tools.ProducerPerformance` /
`ConsumerPerformance` from kafka-tools 4.3.1, the classpath of tests/java resolved by Maven into
.cache/m2). Prints a Markdown table (MB/s, records/s, produce latency where the tool reports
it) with each figure's ratio to the built-in bench's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_s3_cost as common  # noqa: E402  (free_port, wait_port)

REPO = Path(__file__).resolve().parent.parent


def kafka_classpath() -> str:
    """The Java suite's dependency classpath (kafka-clients, kafka-tools), via Maven."""
    out = Path(tempfile.mkstemp(suffix=".cp")[1])
    subprocess.run(["mvn", "-B", "-q", f"-Dmaven.repo.local={REPO / '.cache/m2'}",
                    "-f", str(REPO / "tests/java/pom.xml"), "dependency:build-classpath",
                    f"-Dmdep.outputFile={out}"], check=True)
    return out.read_text().strip()


class Agent:
    """`streamhouse serve` on its embedded defaults in `data_dir`."""

    def __init__(self, binary: str, data_dir: Path, extra: list[str] | None = None):
        self.data_dir = data_dir
        self.port = common.free_port()
        self.http = f"127.0.0.1:{common.free_port()}"
        args = [binary, "serve", "--data-dir", str(data_dir),
                "--kafka-addr", f"127.0.0.1:{self.port}", "--http-addr", self.http,
                *(extra or [])]
        self.proc = subprocess.Popen(args, stdout=open(data_dir / "agent.log", "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        common.wait_port(self.port, self.proc, "streamhouse serve")
        self.bootstrap = f"127.0.0.1:{self.port}"

    def create_topic(self, binary: str, name: str, partitions: int) -> None:
        subprocess.run([binary, "--bootstrap", self.bootstrap, "topic", "create", name,
                        "--partitions", str(partitions)], check=True, stdout=subprocess.DEVNULL)

    def metrics(self) -> str:
        """The agent's /metrics text."""
        url = f"http://{self.http}/metrics"
        return urllib.request.urlopen(url, timeout=10).read().decode()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def metric(text: str, series: str) -> float:
    """The value of one series (name and labels, as printed) in /metrics text; NaN if absent."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def builtin(binary: str, agent: Agent, topic: str, records: int, size: int) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    base = [binary, "bench", "--bootstrap", agent.bootstrap]
    subprocess.run(base + ["produce", "--topic", topic, "-q", "--json", str(out),
                           "--records", str(records), "--record-size", str(size)],
                   check=True, stdout=subprocess.DEVNULL)
    produced = json.loads(out.read_text())
    subprocess.run(base + ["consume", "--topic", topic, "-q", "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    consumed = json.loads(out.read_text())
    return {"produce": produced, "consume": consumed}


def java(classpath: str, main: str, args: list[str]) -> str:
    cmd = ["java", "-Xmx1g", "-cp", classpath, main, *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def status_mib(pid: int, kinds: tuple[str, ...]) -> dict[str, int]:
    """The `kinds` lines of /proc/PID/status (e.g. `RssAnon`, `VmHWM`), in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in kinds:
            found[key] = int(line.split()[1]) // 1024
    return found


class PeakMemory:
    """Samples a process's /proc/PID/status every 50 ms, in a thread, until `stop`, which
    returns the highest of each of `kinds` seen (MiB). The kernel keeps a peak only of the
    whole RSS (`VmHWM`), which counts file pages mapped into the process (the agent's mapped
    reads) with its own memory; `RssAnon` is the process's own."""

    def __init__(self, pid: int, kinds: tuple[str, ...] = ("RssAnon", "RssFile")):
        self.peaks = dict.fromkeys(kinds, 0)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(pid,), daemon=True)
        self._thread.start()

    def _sample(self, pid: int) -> None:
        while not self._done.is_set():
            try:
                now = status_mib(pid, tuple(self.peaks))
            except (FileNotFoundError, ProcessLookupError):
                return  # the process exited
            for key, value in now.items():
                self.peaks[key] = max(self.peaks[key], value)
            time.sleep(0.05)

    def stop(self) -> dict[str, int]:
        self._done.set()
        self._thread.join()
        return dict(self.peaks)


def memory_in_use_gb() -> float:
    """The machine's MemTotal - MemFree (/proc/meminfo), page cache included: on a VM whose
    host backs only part of the guest's memory, new pages past it are slower to fill (see
    scripts/bench_machine_memory.sh), so rounds are comparable only at similar figures."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kib = int(info["MemTotal"].split()[0]) - int(info["MemFree"].split()[0])
    return kib / 1024 / 1024


def machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far (the `cpu` line of /proc/stat)."""
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def kafka_tools(classpath: str, bootstrap: str, topic: str, records: int, size: int,
                props: list[str]) -> dict:
    # The producer's own CPU and the machine's busy share while it runs: on a small machine
    # the load generator shares the cores with the server, which caps what either server can
    # show (a produce phase near 100 % busy is bound by the machine, not by the server).
    children, (busy0, total0) = os.times(), machine_cpu()
    produce = java(classpath, "org.apache.kafka.tools.ProducerPerformance", [
        "--topic", topic, "--num-records", str(records), "--record-size", str(size),
        "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}",
        "acks=all", *props])
    after, (busy1, total1) = os.times(), machine_cpu()
    client_cpu = (after.children_user + after.children_system
                  - children.children_user - children.children_system)
    # The summary line: "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max
    # latency, p50 ms 50th, p95 ms 95th, p99 ms 99th, p999 ms 99.9th."
    last = [line for line in produce.splitlines() if "records sent" in line][-1]
    nums = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", last)]
    consume = java(classpath, "org.apache.kafka.tools.ConsumerPerformance", [
        "--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records),
        "--timeout", "60000", "--print-metrics"])
    # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
    # rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec. MB.sec counts the group
    # join too; fetch.MB.sec only the time after it.
    row = [line for line in consume.splitlines() if line[:1].isdigit()][-1].split(",")
    return {
        "produce": {"records_per_s": nums[1], "mb_per_s": nums[2], "p50_ms": nums[5],
                    "p99_ms": nums[7], "client_cpu_s_per_gb": client_cpu / (records * size / 1e9),
                    "machine_busy": (busy1 - busy0) / max(total1 - total0, 1e-9)},
        "consume": {"mb_per_s": float(row[3]), "records_per_s": float(row[5]),
                    "rebalance_ms": float(row[6]), "fetch_mb_per_s": float(row[8]),
                    "fetch_latency_ms": consumer_metric(consume, "fetch-latency-avg"),
                    "fetches": consumer_metric(consume, "fetch-total")},
    }


def consumer_metric(output: str, name: str) -> float:
    """A fetch-manager metric of the consumer from `--print-metrics` (the consumer's own view of
    the server: `fetch-latency-avg` is the time from sending a Fetch to having its response)."""
    found = re.search(rf"^consumer-fetch-manager-metrics:{name}:\{{client-id=[^}}]*\}}\s*:\s*"
                      r"([\d.]+)", output, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(REPO / "target/release/streamhouse"))
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    classpath = kafka_classpath()
    scratch = Path(tempfile.mkdtemp(prefix="sh-tools-bench-"))
    agent = Agent(args.binary, scratch)
    try:
        results = {}
        # The Java producer's defaults (16 KiB batches, 5 ms linger), then batches as large as
        # the built-in bench's.
        tools = {"kafka-tools": [], "kafka-tools batch.size=256KiB": ["batch.size=262144",
                                                                     "linger.ms=10"]}
        for name in ("builtin", *tools):
            topic = f"perf-{re.sub(r'[^a-z0-9]+', '-', name)}-{int(time.time())}"
            agent.create_topic(args.binary, topic, args.partitions)
            if name == "builtin":
                r = builtin(args.binary, agent, topic, args.records, args.record_size)
                produced, consumed = r["produce"], r["consume"]
                results[name] = {
                    "produce": {**produced["produce"],
                                "p50_ms": produced["produce_ack_ms"]["p50"],
                                "p99_ms": produced["produce_ack_ms"]["p99"]},
                    "consume": consumed["consume"],
                }
            else:
                results[name] = kafka_tools(classpath, agent.bootstrap, topic, args.records,
                                            args.record_size, tools[name])
    finally:
        agent.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(results, indent=2))
    base = results["builtin"]
    print("\n| client | produce MB/s | produce records/s | ack p50 / p99 ms | consume MB/s |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        p, c = r["produce"], r["consume"]
        ratio = p["mb_per_s"] / base["produce"]["mb_per_s"]
        cratio = c["mb_per_s"] / base["consume"]["mb_per_s"]
        print(f"| {name} | {p['mb_per_s']:.1f} ({ratio:.2f}x) | {p['records_per_s']:,.0f} | "
              f"{p['p50_ms']:.0f} / {p['p99_ms']:.0f} | {c['mb_per_s']:.1f} ({cratio:.2f}x) |")


if __name__ == "__main__":
    main()
