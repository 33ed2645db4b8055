#!/usr/bin/env python3
"""Transactional produce against idempotent produce, in the same run on the same agent
(issue 16, BENCHMARKS.md).

Starts one `streamhouse serve` (fresh data dir), then for each mode produces `--records`
records of `--size` bytes over `--partitions` partitions with confluent-kafka (librdkafka):

- `idempotent`: enable.idempotence, acks=all; latency per record = produce() to delivery report;
- `idem-batches`: idempotent, in batches of `--per-txn` records, each waited for (flush());
  "commit" latency = the flush;
- `transactional`: the same records in transactions of `--per-txn` records (begin, produce,
  commit_transaction); latency per record = produce() to the return of the commit that made it
  visible, and the commit latency itself (commit_transaction call to return).

Usage: .venv/bin/python scripts/bench_txn.py --bin target/release/streamhouse
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from confluent_kafka import Producer  # noqa: E402

from harness import StreamhouseServer  # noqa: E402
from kafka_util import create_topic  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run_batches(prod: Producer, topic: str, args, begin, end) -> dict:
    """`--records` records in batches of `--per-txn`: `begin()`, produce, `end()` (which
    returns once the batch is acknowledged or committed); per-record latency is produce() to
    the end of its batch, and each `end()` is timed."""
    payload = b"x" * args.size
    latencies: list[float] = []
    ends: list[float] = []
    started = time.monotonic()
    done = 0
    while done < args.records:
        count = min(args.per_txn, args.records - done)
        begin()
        sent_at = []
        for i in range(done, done + count):
            sent_at.append(time.monotonic())
            prod.produce(topic, payload, partition=i % args.partitions)
            prod.poll(0)
        end_start = time.monotonic()
        end()
        now = time.monotonic()
        ends.append(now - end_start)
        latencies.extend(now - s for s in sent_at)
        done += count
    elapsed = time.monotonic() - started
    return {"records/s": done / elapsed, "lat": latencies, "commits": ends}


def run_idempotent_batches(bootstrap: str, topic: str, args) -> dict:
    """Idempotent, each batch waited for with flush(): the transactions' shape without them."""
    prod = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "linger.ms": args.linger_ms})

    def end():
        assert prod.flush(60) == 0

    return run_batches(prod, topic, args, lambda: None, end)


def run_transactional(bootstrap: str, topic: str, args) -> dict:
    """One transaction per batch: begin_transaction, produce, commit_transaction."""
    prod = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"bench-{topic}",
                     "linger.ms": args.linger_ms})
    prod.init_transactions(30)
    return run_batches(prod, topic, args, prod.begin_transaction,
                       lambda: prod.commit_transaction(60))


def run_idempotent(bootstrap: str, topic: str, args) -> dict:
    """Idempotent, open loop: as fast as it goes (throughput; latency is mostly queueing)."""
    prod = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "linger.ms": args.linger_ms})
    latencies: list[float] = []
    payload = b"x" * args.size

    def delivered(err, _msg, sent=None):
        if err is None:
            latencies.append(time.monotonic() - sent)

    started = time.monotonic()
    for i in range(args.records):
        sent = time.monotonic()
        while True:
            try:
                prod.produce(topic, payload, partition=i % args.partitions,
                             on_delivery=lambda e, m, s=sent: delivered(e, m, s))
                break
            except BufferError:
                prod.poll(0.01)
        prod.poll(0)
    assert prod.flush(60) == 0
    elapsed = time.monotonic() - started
    return {"records/s": len(latencies) / elapsed, "lat": latencies, "commits": []}


def report(name: str, result: dict, size: int) -> None:
    lat = result["lat"]
    line = (f"{name:14s} {result['records/s']:9.0f} rec/s {result['records/s'] * size / 1e6:7.2f} "
            f"MB/s  record latency p50 {percentile(lat, 50) * 1000:6.1f} ms "
            f"p99 {percentile(lat, 99) * 1000:6.1f} ms")
    if result["commits"]:
        c = result["commits"]
        line += (f"  commit p50 {percentile(c, 50) * 1000:6.1f} ms "
                 f"p99 {percentile(c, 99) * 1000:6.1f} ms ({len(c)} batches)")
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, required=True)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--per-txn", type=int, default=500)
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--flush-interval-ms", type=int, default=None)
    args = parser.parse_args()
    extra = []
    if args.flush_interval_ms is not None:
        extra = ["--flush-interval-ms", str(args.flush_interval_ms)]
    with tempfile.TemporaryDirectory() as tmp:
        server = StreamhouseServer(args.bin.resolve(), Path(tmp), extra_args=extra).start()
        try:
            for name, run in (("idempotent", run_idempotent),
                              ("idem-batches", run_idempotent_batches),
                              ("transactional", run_transactional),
                              ("idem-batches", run_idempotent_batches),
                              ("transactional", run_transactional)):
                topic = f"bench-{name}-{time.monotonic_ns()}"
                create_topic(server.bootstrap, topic, args.partitions)
                report(name, run(server.bootstrap, topic, args), args.size)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
