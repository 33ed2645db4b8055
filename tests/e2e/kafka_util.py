"""Thin helpers over confluent-kafka (librdkafka) shared by the e2e tests."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLIENT_TIMEOUT_S = 30.0


def client_trail(path: Path, contexts: str) -> dict:
    """Client settings that write librdkafka's debug lines for `contexts` (its `debug`
    setting, e.g. "eos,msg") to `path`, so that a rare failure can show what the client saw and
    did. librdkafka hands log lines over in `poll`/`consume`, which the caller runs anyway."""
    logger = logging.getLogger(f"rdkafka:{path}")
    if not logger.handlers:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return {"logger": logger, "debug": contexts}


def trail_lines(path: Path, pattern: str, keep: int = 12) -> list[str]:
    """The last `keep` lines of the log at `path` matching the regular expression `pattern`:
    a failure's evidence, short enough for a CI report."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return [f"(no log at {path})"]
    hits = [line for line in lines if re.search(pattern, line)]
    return [line[:300] for line in hits[-keep:]]


@dataclass(frozen=True)
class Record:
    """What a test sends: partition None lets the partitioner pick by key."""
    key: bytes | None
    value: bytes
    partition: int | None = None
    timestamp: int | None = None


@dataclass(frozen=True)
class Stored:
    """A record as the broker reports it (delivery report) or returns it (fetch)."""
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int | None = None


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """CreateTopics, then wait until Metadata shows every partition with a leader."""
    client = admin(bootstrap)  # must outlive the future: destroying it fails the request
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        operation_timeout=CLIENT_TIMEOUT_S, request_timeout=CLIENT_TIMEOUT_S)
    futures[name].result(timeout=CLIENT_TIMEOUT_S)
    wait_for_topic(bootstrap, name, partitions)


def wait_for_topic(bootstrap: str, name: str, partitions: int) -> None:
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    client = admin(bootstrap)
    last = None
    while time.monotonic() < deadline:
        last = client.list_topics(topic=name, timeout=10).topics.get(name)
        if (last is not None and last.error is None and len(last.partitions) == partitions
                and all(p.leader >= 0 for p in last.partitions.values())):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not ready with {partitions} partitions: {last!r}")


def producer(bootstrap: str, **overrides) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "socket.timeout.ms": 10000,
    }
    conf.update(overrides)
    return Producer(conf)


def produce_all(prod: Producer, topic: str, records: Iterable[Record],
                flush_every: int | None = None) -> list[Stored]:
    """Produce, wait for every delivery report, fail on any delivery error.

    `flush_every` forces a flush (and so separate produce requests/batches) every N records.
    """
    delivered: list[Stored] = []
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"{err} (key={msg.key()!r})")
        else:
            delivered.append(Stored(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                    msg.timestamp()[1]))

    for i, rec in enumerate(records, 1):
        kwargs = {"key": rec.key, "value": rec.value, "on_delivery": on_delivery}
        if rec.partition is not None:
            kwargs["partition"] = rec.partition
        if rec.timestamp is not None:
            kwargs["timestamp"] = rec.timestamp
        _produce_with_backpressure(prod, topic, kwargs)
        if flush_every and i % flush_every == 0:
            _flush(prod)
    _flush(prod)
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:5]}"
    return delivered


def _produce_with_backpressure(prod: Producer, topic: str, kwargs: dict) -> None:
    while True:
        try:
            prod.produce(topic, **kwargs)
            prod.poll(0)
            return
        except BufferError:
            prod.poll(0.05)


def _flush(prod: Producer) -> None:
    remaining = prod.flush(CLIENT_TIMEOUT_S * 2)
    assert remaining == 0, f"{remaining} messages still undelivered after flush"


def consumer(bootstrap: str, **overrides) -> Consumer:
    """A consumer for manual `assign`: the group id is required but never joined."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "e2e-unused-group",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "socket.timeout.ms": 10000,
    }
    conf.update(overrides)
    return Consumer(conf)


def high_watermarks(bootstrap: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    c = consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=CLIENT_TIMEOUT_S,
                                           cached=False)[1]
                for p in partitions}
    finally:
        c.close()


def consume_until(bootstrap: str, topic: str, end_offsets: dict[int, int],
                  timeout_s: float = 60.0) -> dict[int, list[Stored]]:
    """Read each partition from the beginning until its offset `end_offsets[p]` (exclusive)."""
    c = consumer(bootstrap)
    got: dict[int, list[Stored]] = {p: [] for p in end_offsets}
    pending = {p for p, end in end_offsets.items() if end > 0}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in end_offsets])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in c.consume(num_messages=10000, timeout=0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(msg.error())
                p = msg.partition()
                got[p].append(Stored(p, msg.offset(), msg.key(), msg.value(), msg.timestamp()[1]))
                if msg.offset() + 1 >= end_offsets[p]:
                    pending.discard(p)
    finally:
        c.close()
    progress = {p: (len(got[p]), end_offsets[p]) for p in pending}
    assert not pending, f"timed out consuming; partition: (records read, end offset) = {progress}"
    return got


def consume_all(bootstrap: str, topic: str, partitions: int,
                timeout_s: float = 60.0) -> dict[int, list[Stored]]:
    """Everything currently in the topic, up to the high watermarks read first."""
    ends = high_watermarks(bootstrap, topic, range(partitions))
    return consume_until(bootstrap, topic, ends, timeout_s)


def assert_offsets_dense(got: dict[int, list[Stored]]) -> None:
    """Within each partition offsets start at 0 and increase by exactly one (no compaction here)."""
    for p, recs in got.items():
        offsets = [r.offset for r in recs]
        assert offsets == list(range(len(offsets))), (
            f"partition {p}: offsets not 0..{len(offsets) - 1}: first bad at "
            f"{next(i for i, o in enumerate(offsets) if o != i)}")


class Sender:
    """An idempotent producer recording each value's outcome, for fault tests: which records
    were acknowledged, which answered with an error."""

    def __init__(self, bootstrap: str, message_timeout_ms: int, request_timeout_ms: int):
        self.p = producer(bootstrap, **{"enable.idempotence": True, "linger.ms": 5,
                                        "message.timeout.ms": message_timeout_ms,
                                        "request.timeout.ms": request_timeout_ms})
        self.settle_s = message_timeout_ms / 1000 + 30
        self.acked: set[bytes] = set()
        self.failed: set[bytes] = set()
        self.errors: dict[bytes, str] = {}

    def _report(self, err, msg) -> None:
        (self.failed if err else self.acked).add(msg.value())
        if err:
            self.errors[msg.value()] = err.name()

    def send(self, topic: str, prefix: str, count: int, pace_s: float, size: int = 0) -> None:
        pad = b"x" * size
        for i in range(count):
            value = b"%s-%06d-" % (prefix.encode(), i) + pad
            _produce_with_backpressure(self.p, topic, {"value": value,
                                                       "on_delivery": self._report})
            self.p.poll(0)
            time.sleep(pace_s)

    def settle(self) -> None:
        """Waits for the outcome of every record sent."""
        assert self.p.flush(self.settle_s) == 0


def assert_failed_never_stored(bootstrap: str, topic: str, partitions: int,
                               sender: Sender) -> int:
    """The log holds every acknowledged record once, and no record answered with an error;
    returns how many records it holds."""
    got = consume_all(bootstrap, topic, partitions, timeout_s=60)
    assert_offsets_dense(got)
    values = [r.value for recs in got.values() for r in recs]
    stored = set(values)
    assert len(values) == len(stored), f"{len(values) - len(stored)} records stored twice"
    wrongly = sorted(stored & sender.failed)
    assert not wrongly, (
        f"{len(wrongly)} records answered with an error were stored, first: "
        f"{[(v[:20], sender.errors[v]) for v in wrongly[:5]]}")
    assert sender.acked <= stored, f"{len(sender.acked - stored)} acknowledged records missing"
    return len(stored)
