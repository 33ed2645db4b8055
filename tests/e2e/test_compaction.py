"""Log compaction (issue 15) with real clients: cleanup.policy=compact keeps the newest value of
every key at its original offset, removes deleted keys once delete.retention.ms has passed, and
consumers (one from the beginning, one paused in the middle of the log) read across the gaps.

RECORDS records over KEYS keys with updates and tombstones; CI runs 100,000 records
(`STREAMHOUSE_E2E_COMPACTION_RECORDS=1000000` for the full acceptance run, see BENCHMARKS.md).
"""

from __future__ import annotations

import os
import random
import re
import time
import urllib.request

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

from kafka_util import (CLIENT_TIMEOUT_S, _flush, _produce_with_backpressure, admin,
                        consume_until, consumer, high_watermarks, producer, wait_for_topic)

RECORDS = int(os.environ.get("STREAMHOUSE_E2E_COMPACTION_RECORDS", "100000"))
KEYS = 10_000
PARTITIONS = 2
TOMBSTONE_SHARE = 0.05
DELETE_RETENTION_MS = 3_000
SEED = 20261205
# Consolidate quickly and check compaction every second: compaction works on consolidated
# segments, and flushed slices are consolidated once 10 s old.
SERVER_ARGS = ["--consolidation-max-age-ms", "1000", "--compaction-interval-ms", "1000"]


def create_compacted_topic(bootstrap: str, name: str) -> None:
    create_topic_with(bootstrap, name, {"cleanup.policy": "compact",
                                        "delete.retention.ms": str(DELETE_RETENTION_MS),
                                        "min.cleanable.dirty.ratio": "0.01"})


def create_topic_with(bootstrap: str, name: str, config: dict[str, str]) -> None:
    client = admin(bootstrap)
    futures = client.create_topics([NewTopic(name, PARTITIONS, 1, config=config)],
                                   operation_timeout=CLIENT_TIMEOUT_S,
                                   request_timeout=CLIENT_TIMEOUT_S)
    futures[name].result(timeout=CLIENT_TIMEOUT_S)
    wait_for_topic(bootstrap, name, PARTITIONS)


def produce_updates(bootstrap: str, topic: str) -> dict[tuple[int, int], tuple[bytes, bytes | None]]:
    """Produces the updates and tombstones, then a last live record per partition (the log's
    last record is never compacted away); returns every record by (partition, offset)."""
    rng = random.Random(SEED)
    stored: dict[tuple[int, int], tuple[bytes, bytes | None]] = {}
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            stored[(msg.partition(), msg.offset())] = (msg.key(), msg.value())

    prod = producer(bootstrap, **{"enable.idempotence": True, "linger.ms": 20,
                                  "compression.type": "lz4"})
    for i in range(RECORDS):
        key = b"key-%05d" % rng.randrange(KEYS)
        value = None if rng.random() < TOMBSTONE_SHARE else b"value-%07d" % i
        _produce_with_backpressure(prod, topic, {"key": key, "value": value,
                                                 "on_delivery": on_delivery})
    for p in range(PARTITIONS):
        _produce_with_backpressure(prod, topic, {"key": b"end-%d" % p, "value": b"end",
                                                 "partition": p, "on_delivery": on_delivery})
    _flush(prod)
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    return stored


def newest_per_key(stored: dict[tuple[int, int], tuple[bytes, bytes | None]]):
    """What compaction must leave: (partition, offset) -> (key, value) of each key's newest
    record, deleted keys left out."""
    newest: dict[bytes, tuple[int, int]] = {}
    for (p, offset), (key, _) in sorted(stored.items()):
        newest[key] = (p, offset)
    return {at: stored[at] for at in newest.values() if stored[at][1] is not None}


def read_everything(bootstrap: str, topic: str):
    ends = high_watermarks(bootstrap, topic, range(PARTITIONS))
    got = consume_until(bootstrap, topic, ends, timeout_s=120)
    return {(r.partition, r.offset): (r.key, r.value) for recs in got.values() for r in recs}, got


def pause_mid_log(bootstrap: str, topic: str, count: int):
    """A consumer that read `count` records from the middle of each partition and stopped; it
    prefetches little, so what it reads next is fetched after compaction."""
    c = consumer(bootstrap, **{"queued.max.messages.kbytes": 64,
                               "max.partition.fetch.bytes": 16384})
    middle = high_watermarks(bootstrap, topic, range(PARTITIONS))
    c.assign([TopicPartition(topic, p, middle[p] // 2) for p in range(PARTITIONS)])
    seen: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    read = 0
    deadline = time.monotonic() + 60
    while read < count and time.monotonic() < deadline:
        for msg in c.consume(num_messages=1000, timeout=0.5):
            if msg.error():
                raise KafkaException(msg.error())
            seen[msg.partition()].append(msg.offset())
            read += 1
    assert read >= count, f"read {read} of {count} before pausing"
    return c, seen


def resume_to_end(c, seen: dict[int, list[int]], ends: dict[int, int]) -> None:
    pending = {p for p in range(PARTITIONS) if not seen[p] or seen[p][-1] + 1 < ends[p]}
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for msg in c.consume(num_messages=1000, timeout=0.5):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            seen[msg.partition()].append(msg.offset())
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
    c.close()
    assert not pending, f"the paused consumer did not reach the end of {pending}"


def test_compacted_topic_keeps_the_newest_value_of_every_key(server_factory, topic, measurements):
    started = time.monotonic()
    server = server_factory(extra_args=SERVER_ARGS)
    bootstrap = server.bootstrap
    create_compacted_topic(bootstrap, topic)
    stored = produce_updates(bootstrap, topic)
    produced_s = time.monotonic() - started
    expected = newest_per_key(stored)
    paused, paused_seen = pause_mid_log(bootstrap, topic, 2_000)

    deadline = time.monotonic() + max(90, RECORDS / 5_000)
    while True:
        got, by_partition = read_everything(bootstrap, topic)
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(2)
    missing = [at for at in expected if at not in got]
    extra = [at for at in got if at not in expected]
    assert got == expected, (f"{len(got)} records, {len(expected)} expected; missing "
                             f"{missing[:5]}, unexpected {extra[:5]}")
    gaps = 0
    for p, recs in by_partition.items():
        offsets = [r.offset for r in recs]
        assert offsets == sorted(set(offsets)), f"partition {p}: offsets not increasing"
        gaps += sum(1 for a, b in zip(offsets, offsets[1:]) if b > a + 1)
    assert gaps > 0, "a compacted log has gaps"
    deleted = {k for k, v in stored.values()} - {k for k, _ in expected.values()}
    assert deleted, "some keys end deleted"

    ends = high_watermarks(bootstrap, topic, range(PARTITIONS))
    resume_to_end(paused, paused_seen, ends)
    for p, offsets in paused_seen.items():
        assert offsets == sorted(set(offsets)), f"paused consumer, partition {p}: went back"
    figures = compaction_metrics(server.http_port)
    assert figures["streamhouse_compaction_segments_replaced_total"] > 0, figures
    assert figures["streamhouse_compaction_records_removed_total"] > 0, figures
    assert "streamhouse_compaction_dirty_bytes" in figures, figures
    measurements["compaction e2e"] = (f"{RECORDS} records over {KEYS} keys: produced in "
                                      f"{produced_s:.1f} s, {len(expected)} live keys left, "
                                      f"compacted and verified in "
                                      f"{time.monotonic() - started:.1f} s")


def compaction_metrics(http_port: int) -> dict[str, float]:
    """The agent's `streamhouse_compaction_*` figures from /metrics (progress and backlog)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(streamhouse_compaction_\w+)(?:\{[^}]*\})? (\S+)$", text,
                                 re.MULTILINE)}


def alter_cleanup_policy(bootstrap: str, topic: str, policy: str) -> None:
    client = admin(bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET)])
    for future in client.incremental_alter_configs([resource]).values():
        future.result(timeout=CLIENT_TIMEOUT_S)


def test_keyless_records_are_refused_on_a_compacted_topic(server_factory, topic):
    server = server_factory(extra_args=SERVER_ARGS)
    create_compacted_topic(server.bootstrap, topic)
    errors = []
    prod = producer(server.bootstrap, **{"message.send.max.retries": 0})
    prod.produce(topic, value=b"no key", partition=0,
                 on_delivery=lambda err, _msg: errors.append(err))
    prod.flush(CLIENT_TIMEOUT_S)
    assert errors and errors[0] is not None, "a keyless record was accepted"
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]


def test_switching_to_compact_takes_effect_live_and_sigkill_loses_nothing(server_factory, topic):
    """A topic created with cleanup.policy=delete is switched to compact on the running agent;
    the agent is SIGKILLed at random points while it consolidates and compacts. Every read in
    between shows a log where each key's newest record is still there and nothing else was
    invented; in the end the log is compacted."""
    rng = random.Random(SEED)
    server = server_factory(extra_args=SERVER_ARGS)
    bootstrap = server.bootstrap
    create_topic_with(bootstrap, topic, {"cleanup.policy": "delete",
                                         "min.cleanable.dirty.ratio": "0.01"})
    stored = {}
    prod = producer(bootstrap, **{"enable.idempotence": True, "linger.ms": 20})
    for i in range(50_000):
        value = b"v%06d" % i
        _produce_with_backpressure(prod, topic, {
            "key": b"k%04d" % rng.randrange(1_000), "value": value, "partition": 0,
            "on_delivery": lambda err, msg: stored.__setitem__((0, msg.offset()),
                                                               (msg.key(), msg.value()))})
    _produce_with_backpressure(prod, topic, {"key": b"end", "value": b"end", "partition": 0})
    _flush(prod)
    expected = newest_per_key(stored)
    expected_keys = len(expected)
    alter_cleanup_policy(bootstrap, topic, "compact")

    deadline = time.monotonic() + 90
    kills = 0
    while True:
        if kills < 4:
            time.sleep(rng.uniform(1.0, 6.0))
            server.restart(hard=True)
            kills += 1
        got, _ = read_everything(bootstrap, topic)
        got.pop(max(got), None)  # the "end" record
        assert all(stored.get(at) == record for at, record in got.items()), "invented record"
        lost = [at for at in expected if at not in got]
        assert not lost, f"newest records lost after kill {kills}: {lost[:5]}"
        if (len(got) == expected_keys and kills >= 4) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got == expected, f"{len(got)} records left, {expected_keys} expected"
