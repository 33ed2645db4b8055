#!/usr/bin/env python3
"""Load generator for BENCHMARKS.md: a real librdkafka client against a running broker.

Phases (each bounded in count and time):
  1. produce throughput: --count records of --record-size bytes, acks=all, as fast as possible;
  2. consume throughput: read them all back from the beginning (manual assign, no group);
  3. latency at a fixed --rate for --latency-seconds: produce-ack latency (delivery report
     time - send time) and end-to-end latency (time a tailing consumer receives the record -
     the record's creation time, carried in the payload with ns precision).
Prints one JSON summary on stdout. Run it with the venv from scripts/setup-test-deps.sh:
  .venv/bin/python scripts/bench_kafka.py --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
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
    p.add_argument("--rate", type=int, default=1000, help="records/s in the latency phase")
    p.add_argument("--latency-seconds", type=float, default=10.0)
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
    conf = {"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 5,
            "batch.size": 1_000_000, "compression.type": args.compression,
            "queue.buffering.max.messages": 1_000_000}
    conf.update(overrides)
    return Producer(conf)


def new_consumer(args, **overrides):
    conf = {"bootstrap.servers": args.bootstrap, "group.id": "bench-unused",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100}
    conf.update(overrides)
    return Consumer(conf)


def produce_throughput(args):
    prod = new_producer(args)
    block = payload_block(args.record_size)
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))

    start = time.perf_counter()
    for i in range(args.count):
        while True:
            try:
                prod.produce(args.topic, block, key=b"%d" % (i % 1024), on_delivery=on_delivery)
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
    records = nbytes = 0
    start = time.perf_counter()
    deadline = time.monotonic() + TIMEOUT_S * 2
    while pending and time.monotonic() < deadline:
        for msg in c.consume(num_messages=10_000, timeout=1.0):
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
    prod = new_producer(args, **{"linger.ms": 0})
    prod.produce(args.topic, bytes(STAMP.size), key=WARM_UP)  # connect off the clock
    prod.flush(TIMEOUT_S)
    filler = payload_block(args.record_size)[STAMP.size:]
    ack_ms: list[float] = []
    total = int(args.rate * args.latency_seconds)
    start = time.perf_counter()
    for i in range(total):
        target = start + i / args.rate
        while (delay := target - time.perf_counter()) > 0:
            prod.poll(min(delay, 0.005))
        sent = time.perf_counter()
        prod.produce(args.topic, STAMP.pack(i, time.time_ns()) + filler, key=b"%d" % i,
                     on_delivery=lambda err, _m, sent=sent: ack_ms.append(
                         float("nan") if err else (time.perf_counter() - sent) * 1000))
        prod.poll(0)
    prod.flush(TIMEOUT_S)
    tail.finish(total)
    return {"rate_per_s": args.rate, "records": total,
            "produce_ack_ms": percentiles(ack_ms),
            "end_to_end_ms": percentiles(tail.latencies_ms),
            "received": len(tail.latencies_ms)}


def percentiles(values):
    ok = sorted(v for v in values if v == v)
    if not ok:
        return {"count": 0}

    def at(q):
        return round(ok[min(len(ok) - 1, int(q * len(ok)))], 2)

    return {"count": len(ok), "failed": len(values) - len(ok), "p50": at(0.50), "p99": at(0.99),
            "max": round(ok[-1], 2)}


def main(argv=None):
    args = parse_args(argv)
    if not args.no_create:
        create_topic(args.bootstrap, args.topic, args.partitions)
    summary = {"bootstrap": args.bootstrap, "topic": args.topic, "partitions": args.partitions,
               "record_size": args.record_size, "compression": args.compression,
               "client": {"confluent_kafka": importlib.metadata.version("confluent-kafka"),
                          "librdkafka": libversion()[0]}}
    summary["produce"] = produce_throughput(args)
    summary["consume"] = consume_throughput(args)
    summary["latency"] = latency_phase(args)
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
