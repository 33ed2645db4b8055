#!/usr/bin/env python3
"""Object-store request cost of the write path, against an S3 endpoint that counts requests
and adds S3-like latency (scripts/s3_cost_server.py: PUT 30 ms + 10 ms/MB, GET 15 ms).

    .venv/bin/python scripts/bench_s3_cost.py [--bin target/release/streamhouse]
        [--duration 60] [--intervals 5,50,250] [--workloads W1,W2,W3]

Workloads, 1 KiB records, acks=all, `streamhouse bench`:
  W1  6 partitions, 1,000 records/s in all (end-to-end latency)
  W2  120 partitions at 10 records/s each (end-to-end latency)
  W3  6 partitions, as fast as it goes (`bench produce`)
Each workload runs once per flush interval on a fresh agent and bucket. For each it prints
PUT/s, GET/s, PUTs per MB produced, produce-ack and end-to-end p50/p99, and the request cost
per month at S3 Standard list prices (PUT/LIST $0.005 per 1,000, GET/HEAD $0.0004 per 1,000,
DELETE free) if the rate held 24x7. After W1 it also re-reads the topic with a cold agent (new
process) once consolidation has run, and reports GETs per MB and MB/s, and the bucket's object
count. Figures go to stdout as a Markdown table and to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRICE = {"PUT": 5e-6, "LIST": 5e-6, "GET": 0.4e-6, "HEAD": 0.4e-6}
MONTH_S = 30 * 24 * 3600
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
       "AWS_REGION": "us-east-1"}
WORKLOADS = {
    "W1": (["e2e", "--partitions", "6", "--rate", "1000"], "w1"),
    # One record per Produce request at 1,200/s: the window of unanswered requests must exceed
    # rate x latency (~300 at 250 ms), and the agent answers at most 128 per connection, so
    # the generator uses 4 connections (librdkafka would put all partitions in one request).
    "W2": (["e2e", "--partitions", "120", "--rate", "1200", "--concurrency", "4"], "w2"),
    "W3": (["produce", "--partitions", "6"], "w3"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on {port}")


def http(method: str, url: str) -> bytes:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


class S3:
    """scripts/s3_cost_server.py on a free port."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "scripts/s3_cost_server.py"), "--port", str(self.port)],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, self.proc, "s3_cost_server")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def bucket(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        http("PUT", f"{self.endpoint}/{name}")
        return name

    def reset(self) -> None:
        http("POST", f"{self.endpoint}/__stats/reset")

    def stats(self) -> dict:
        return json.loads(http("GET", f"{self.endpoint}/__stats"))

    def object_count(self, bucket: str) -> int:
        # Counted without going through the stats (LIST requests are reset afterwards anyway).
        body = http("GET", f"{self.endpoint}/{bucket}?list-type=2&max-keys=100000").decode()
        return len(re.findall(r"<Key>", body))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Agent:
    """`streamhouse serve` on the bench bucket."""

    def __init__(self, binary: str, s3: S3, bucket: str, data_dir: Path, interval_ms: int | None):
        self.port = free_port()
        args = [binary, "serve", "--data-dir", str(data_dir),
                "--kafka-addr", f"127.0.0.1:{self.port}", "--http-addr", f"127.0.0.1:{free_port()}",
                "--s3-bucket", bucket, "--s3-endpoint", s3.endpoint, "--s3-region", "us-east-1"]
        if interval_ms is not None:
            args += ["--flush-interval-ms", str(interval_ms)]
        env = {**os.environ, **ENV, "RUST_LOG": "warn"}
        self.proc = subprocess.Popen(args, env=env, stdout=open(data_dir / "agent.log", "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, self.proc, "streamhouse serve")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def bench(binary: str, agent: Agent, args: list[str], topic: str, duration: int) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [binary, "bench", *args, "--topic", topic, "-q",
           "--json", str(out), "--bootstrap", f"127.0.0.1:{agent.port}"]
    if args[0] != "consume":
        cmd += ["--record-size", "1024", "--duration", f"{duration}s"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def cost(stats: dict) -> dict:
    secs = max(stats["seconds"], 1e-9)
    req = stats["requests"]
    per_s = {k: v / secs for k, v in req.items()}
    month = sum(per_s.get(k, 0) * p for k, p in PRICE.items()) * MONTH_S
    return {"per_s": per_s, "usd_month": month, "requests": req, "seconds": secs}


def run_one(binary, s3, workload, interval, duration, scratch) -> dict:
    args, topic = WORKLOADS[workload]
    bucket = s3.bucket()
    data_dir = Path(tempfile.mkdtemp(dir=scratch))
    agent = Agent(binary, s3, bucket, data_dir, interval)
    try:
        # Topic creation and first metadata are not the steady state: one short warm-up.
        bench(binary, agent, args, topic, 2)
        s3.reset()
        report = bench(binary, agent, args, topic, duration)
        c = cost(s3.stats())
        result = summarize(workload, interval, report, c)
        if workload == "W1":
            result.update(cold_reread(binary, s3, bucket, data_dir, agent, topic, interval))
        return result
    finally:
        agent.stop()


def summarize(workload, interval, report, c) -> dict:
    produced_mb = report["produce"]["bytes"] / 1e6
    per_s = c["per_s"]
    pct = lambda key, p: (report.get(key) or {}).get(p)
    return {
        "workload": workload,
        "flush_interval_ms": interval,
        "produced_mb_s": round(report["produce"]["mb_per_s"], 2),
        "put_s": round(per_s.get("PUT", 0), 2),
        "get_s": round(per_s.get("GET", 0), 2),
        "list_s": round(per_s.get("LIST", 0), 3),
        "delete_batch_s": round(per_s.get("DELETE_BATCH", 0), 3),
        "puts_per_mb": round(c["requests"].get("PUT", 0) / max(produced_mb, 1e-9), 3),
        "ack_p50_ms": pct("produce_ack_ms", "p50"),
        "ack_p99_ms": pct("produce_ack_ms", "p99"),
        "e2e_p50_ms": pct("end_to_end_ms", "p50"),
        "e2e_p99_ms": pct("end_to_end_ms", "p99"),
        "usd_month": round(c["usd_month"], 2),
        "errors": report["errors"]["count"],
    }


def cold_reread(binary, s3, bucket, data_dir, agent, topic, interval) -> dict:
    """Waits for consolidation, then reads the topic from a new agent process (cold cache)."""
    time.sleep(75)  # past the default consolidation age (60 s) and one check interval
    objects = s3.object_count(bucket)
    agent.stop()
    cold = Agent(binary, s3, bucket, data_dir, interval)
    try:
        s3.reset()
        report = bench(binary, cold, ["consume"], topic, 0)
        stats = s3.stats()
        mb = report["consume"]["bytes"] / 1e6
        return {
            "objects_after_consolidation": objects,
            "cold_read_mb_s": round(report["consume"]["mb_per_s"], 2),
            "cold_read_gets_per_mb": round(stats["requests"].get("GET", 0) / max(mb, 1e-9), 3),
        }
    finally:
        cold.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(REPO / "target/release/streamhouse"))
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--intervals", default="default,50,250",
                    help="flush intervals in ms; 'default' leaves the agent's own")
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-s3-cost-"))
    s3 = S3(scratch / "s3.log")
    results = []
    try:
        for workload in args.workloads.split(","):
            for raw in args.intervals.split(","):
                interval = None if raw == "default" else int(raw)
                r = run_one(args.bin, s3, workload, interval, args.duration, scratch)
                print(json.dumps(r), flush=True)
                results.append(r)
    finally:
        s3.stop()
    cols = ["workload", "flush_interval_ms", "produced_mb_s", "put_s", "get_s", "puts_per_mb",
            "ack_p50_ms", "ack_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "usd_month"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c, "default" if c == "flush_interval_ms" else "")) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
