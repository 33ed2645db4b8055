#!/usr/bin/env python3
"""Load generator for BENCHMARKS.md: a real librdkafka client against a running broker.

Phases (--phases, each bounded in count and time):
  produce: --count records of --record-size bytes, acks=all, as fast as possible, spread
           round-robin over the partitions (no keys), after one unmeasured record per partition;
  consume: read them all back from the beginning (manual assign, no group, batch consume());
  latency: records due at a fixed --rate for --latency-seconds: produce-ack latency (delivery
           report time - due time) and end-to-end latency (time a tailing consumer receives the
           record - its due time, carried in the payload with ns precision). Measuring from the
           due time rather than the actual send keeps a stalled generator visible.
Producer settings (linger, batch size, in-flight window, compression) are flags so that
scripts/bench_compare.py can give `streamhouse bench` exactly the same ones.
Prints one JSON summary on stdout. Run it with the venv from scripts/setup-test-deps.sh:
  .venv/bin/python scripts/bench_kafka.py --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import struct
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import libversion
from confluent_kafka.admin import AdminClient, NewTopic

STAMP = struct.Struct(">qq")  # sequence number, send time (time.time_ns)
WARM_UP = b"warm-up"
TIMEOUT_S = 60.0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--topic", default=f"bench-{os.getpid()}")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--count", type=int, default=200_000, help="records in the throughput phases")
    p.add_argument("--record-size", type=int, default=1024, help="value bytes per record")
    p.add_argument("--compression", default="none", help="producer compression.type")
    p.add_argument("--linger-ms", type=float, default=5, help="linger.ms of the produce phase")
    p.add_argument("--batch-size", type=int, default=1_000_000, help="batch.size")
    p.add_argument("--in-flight", type=int, default=128,
                   help="max.in.flight.requests.per.connection (the agent serves 128 at once)")
    p.add_argument("--rate", type=int, default=1000, help="records/s in the latency phase")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--latency-linger-ms", type=float, default=0,
                   help="linger.ms of the latency phase")
    p.add_argument("--produce-api", choices=["batch", "single"], default="batch",
                   help="produce phase: produce_batch() or one produce() per record")
    p.add_argument("--phases", default="produce,consume,latency",
                   help="comma-separated subset of produce,consume,latency")
    p.add_argument("--no-create", action="store_true", help="topic already exists")
    return p.parse_args(argv)


def create_topic(bootstrap, topic, partitions):
    client = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    futures = client.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    try:
        futures[topic].result(timeout=TIMEOUT_S)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def payload_block(size):
    # Random bytes, not zeros: compression must not make the throughput figure meaningless.
    return os.urandom(max(size, STAMP.size))


def new_producer(args, **overrides):
    conf = {"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": args.linger_ms,
            "batch.size": args.batch_size, "compression.type": args.compression,
            "max.in.flight.requests.per.connection": args.in_flight,
            "queue.buffering.max.messages": 1_000_000}
    conf.update(overrides)
    return Producer(conf)


def warm_up(args, prod):
    """One record per partition, acknowledged before the clock starts (as `streamhouse bench`
    does): connecting and the server opening the partitions stay out of the figures."""
    for p in range(args.partitions):
        prod.produce(args.topic, bytes(STAMP.size), key=WARM_UP, partition=p)
    if prod.flush(TIMEOUT_S):
        raise RuntimeError("warm-up records still undelivered after flush")


def new_consumer(args, **overrides):
    conf = {"bootstrap.servers": args.bootstrap, "group.id": "bench-unused",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100}
    conf.update(overrides)
    return Consumer(conf)


def produce_throughput(args):
    """As fast as librdkafka takes them. With --produce-api batch (the default) records are
    handed over 10 000 at a time through produce_batch() and only failures are reported back,
    so the figure is librdkafka's and the server's rather than the Python interpreter's (one
    produce() call plus one delivery callback per record cost ~4 µs of Python CPU, which on a
    loaded machine caps the rate below what the server takes)."""
    prod = new_producer(args, **{"delivery.report.only.error": args.produce_api == "batch"})
    warm_up(args, prod)
    block = payload_block(args.record_size)
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))

    start = time.perf_counter()
    if args.produce_api == "batch":
        chunk = 10_000
        for first in range(0, args.count, chunk):
            batch = [{"value": block, "partition": i % args.partitions}
                     for i in range(first, min(first + chunk, args.count))]
            while batch:
                prod.produce_batch(args.topic, batch, on_delivery=on_delivery)
                # Records the full queue refused carry '_error': offer them again.
                batch = [{"value": m["value"], "partition": m["partition"]}
                         for m in batch if "_error" in m]
                prod.poll(0.01 if batch else 0)
    else:
        for i in range(args.count):
            while True:
                try:
                    prod.produce(args.topic, block, partition=i % args.partitions,
                                 on_delivery=on_delivery)
                    break
                except BufferError:
                    prod.poll(0.01)
            prod.poll(0)
    if prod.flush(TIMEOUT_S * 5):
        raise RuntimeError("produce phase: records still undelivered after flush")
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"produce phase: {len(errors)} delivery errors, first {errors[0]}")
    return rates(args.count, args.count * args.record_size, elapsed)


def consume_throughput(args):
    c = new_consumer(args)
    parts = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    marks = {tp.partition: c.get_watermark_offsets(tp, timeout=TIMEOUT_S) for tp in parts}
    ends = {p: high for p, (_low, high) in marks.items()}
    c.assign([TopicPartition(args.topic, p, low) for p, (low, _high) in marks.items()])
    pending = {p for p, end in ends.items() if end > 0}
    total = sum(high - low for low, high in marks.values())
    records = nbytes = 0
    start = time.perf_counter()
    deadline = time.monotonic() + TIMEOUT_S * 2
    while pending and time.monotonic() < deadline:
        # Never ask for more than is left: consume() waits for its count or its timeout.
        wanted = max(1, min(10_000, total - records))
        for msg in c.consume(num_messages=wanted, timeout=1.0):
            if msg.error():
                raise KafkaException(msg.error())
            records += 1
            nbytes += len(msg.value())
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
    elapsed = time.perf_counter() - start
    c.close()
    if pending:
        raise RuntimeError(f"consume phase timed out with partitions {sorted(pending)} unread")
    return rates(records, nbytes, elapsed)


def rates(records, nbytes, seconds):
    return {"records": records, "bytes": nbytes, "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds), "mb_per_s": round(nbytes / seconds / 1e6, 2)}


class Tail(threading.Thread):
    """Consumes from the current end of every partition, recording end-to-end latency."""

    def __init__(self, args):
        super().__init__(daemon=True)
        self.c = new_consumer(args, **{"fetch.wait.max.ms": 500})
        parts = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        self.c.assign([TopicPartition(args.topic, tp.partition,
                                      self.c.get_watermark_offsets(tp, timeout=TIMEOUT_S)[1])
                       for tp in parts])
        self.latencies_ms: list[float] = []
        self.stop = threading.Event()

    def run(self):
        # poll() returns as soon as one record is there; consume(n, timeout) would hold records
        # back until n arrived or the timeout passed, adding up to that timeout to the latency.
        while not self.stop.is_set():
            msg = self.c.poll(0.1)
            if msg is None:
                continue
            now = time.time_ns()
            if not msg.error() and msg.key() != WARM_UP:
                self.latencies_ms.append((now - STAMP.unpack_from(msg.value())[1]) / 1e6)

    def finish(self, expected, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while len(self.latencies_ms) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        self.join()
        self.c.close()


def latency_phase(args):
    tail = Tail(args)
    tail.start()
    time.sleep(1.0)  # let the tail's first fetches park on the broker
    prod = new_producer(args, **{"linger.ms": args.latency_linger_ms})
    warm_up(args, prod)
    filler = payload_block(args.record_size)[STAMP.size:]
    ack_ms: list[float] = []
    total = int(args.rate * args.latency_seconds)
    start, start_ns = time.perf_counter(), time.time_ns()
    behind = 0.0
    for i in range(total):
        due = start + i / args.rate
        while (delay := due - time.perf_counter()) > 0:
            if delay >= 0.001:
                prod.poll(min(delay, 0.005))  # serves delivery reports while waiting
            else:
                time.sleep(delay)  # poll() waits whole milliseconds: poll(0) here would spin
        behind = max(behind, time.perf_counter() - due)
        due_ns = start_ns + int((due - start) * 1e9)
        prod.produce(args.topic, STAMP.pack(i, due_ns) + filler, partition=i % args.partitions,
                     on_delivery=lambda err, _m, due=due: ack_ms.append(
                         float("nan") if err else (time.perf_counter() - due) * 1000))
        prod.poll(0)
    prod.flush(TIMEOUT_S)
    tail.finish(total)
    return {"rate_per_s": args.rate, "records": total,
            "produce_ack_ms": percentiles(ack_ms),
            "end_to_end_ms": percentiles(tail.latencies_ms),
            "received": len(tail.latencies_ms),
            "generator_max_behind_ms": round(behind * 1000, 2)}


def percentiles(values):
    ok = sorted(v for v in values if v == v)
    if not ok:
        return {"count": 0}

    def at(q):  # nearest rank, as HdrHistogram's value_at_quantile
        return round(ok[max(0, math.ceil(q * len(ok)) - 1)], 2)

    return {"count": len(ok), "failed": len(values) - len(ok), "p50": at(0.50), "p90": at(0.90),
            "p99": at(0.99), "p999": at(0.999), "max": round(ok[-1], 2)}


def main(argv=None):
    args = parse_args(argv)
    if not args.no_create:
        create_topic(args.bootstrap, args.topic, args.partitions)
    phases = set(args.phases.split(","))
    if phases - {"produce", "consume", "latency"}:
        raise SystemExit(f"unknown phases: {sorted(phases - {'produce', 'consume', 'latency'})}")
    summary = {"bootstrap": args.bootstrap, "topic": args.topic, "partitions": args.partitions,
               "record_size": args.record_size, "compression": args.compression,
               "linger_ms": args.linger_ms, "batch_size": args.batch_size,
               "in_flight": args.in_flight, "acks": "all", "produce_api": args.produce_api,
               "client": {"confluent_kafka": importlib.metadata.version("confluent-kafka"),
                          "librdkafka": libversion()[0]}}
    if "produce" in phases:
        summary["produce"] = produce_throughput(args)
    if "consume" in phases:
        summary["consume"] = consume_throughput(args)
    if "latency" in phases:
        summary["latency"] = latency_phase(args)
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
