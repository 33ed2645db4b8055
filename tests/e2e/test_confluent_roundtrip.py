"""100k keyed, compressed records through librdkafka and back, checked record by record."""

import collections

import pytest

from kafka_util import (Record, assert_offsets_dense, consume_until, create_topic, high_watermarks,
                        produce_all, producer)

PARTITIONS = 6
RECORDS = 100_000
KEYS = 1_000


def make_records():
    # Values carry their global sequence number so per-key produce order is checkable;
    # the tail varies per record so compression has real, non-trivial input.
    for i in range(RECORDS):
        key = f"key-{i % KEYS:04d}".encode()
        yield Record(key, f"{i:07d}|{key.decode()}|".encode() + (b"%x" % (i * 2654435761)) * 4)


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_produce_and_consume_100k(server, topic, compression):
    create_topic(server.bootstrap, topic, PARTITIONS)
    prod = producer(server.bootstrap, **{"compression.type": compression, "linger.ms": 20,
                                         "batch.num.messages": 10000})
    delivered = produce_all(prod, topic, make_records())
    assert len(delivered) == RECORDS

    per_partition = collections.Counter(d.partition for d in delivered)
    assert set(per_partition) <= set(range(PARTITIONS))
    assert len(per_partition) > 1, "partitioner put every key on one partition"
    ends = {p: per_partition.get(p, 0) for p in range(PARTITIONS)}
    assert high_watermarks(server.bootstrap, topic, range(PARTITIONS)) == ends

    got = consume_until(server.bootstrap, topic, ends)
    assert_offsets_dense(got)

    consumed = {(r.partition, r.offset): (r.key, r.value) for recs in got.values() for r in recs}
    assert len(consumed) == RECORDS
    expected = {(d.partition, d.offset): (d.key, d.value) for d in delivered}
    assert consumed == expected, "delivery reports and fetched records disagree"

    for p, recs in got.items():
        assert all(r.key is not None and r.value.split(b"|")[1] == r.key for r in recs)
        by_key = collections.defaultdict(list)
        for r in recs:
            by_key[r.key].append(int(r.value[:7]))
        for key, seqs in by_key.items():
            assert seqs == sorted(seqs), f"partition {p} key {key!r} out of produce order"
        keys_here = set(by_key)
        assert all(d.partition == p for d in delivered if d.key in keys_here), \
            "one key landed on several partitions"
