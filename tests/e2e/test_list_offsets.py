"""ListOffsets: watermarks and timestamp lookups as librdkafka issues them."""

from confluent_kafka import OFFSET_END, TopicPartition

from kafka_util import CLIENT_TIMEOUT_S, Record, consumer, create_topic, produce_all, producer

T0 = 1_700_000_000_000
STEP_MS = 1000
RECORDS = 50


def watermarks(c, topic, partition):
    return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=CLIENT_TIMEOUT_S,
                                   cached=False)


def offset_for_time(c, topic, partition, ts):
    (tp,) = c.offsets_for_times([TopicPartition(topic, partition, ts)], timeout=CLIENT_TIMEOUT_S)
    assert tp.error is None, tp.error
    return tp.offset


def test_watermarks_and_offsets_for_times(server, topic):
    create_topic(server.bootstrap, topic, 2)
    c = consumer(server.bootstrap)
    try:
        assert watermarks(c, topic, 0) == (0, 0)

        # Flushing every 10 records spreads the timestamps over several batches.
        records = [Record(b"k", b"v%d" % i, partition=0, timestamp=T0 + i * STEP_MS)
                   for i in range(RECORDS)]
        delivered = produce_all(producer(server.bootstrap), topic, records, flush_every=10)
        assert [d.offset for d in delivered] == list(range(RECORDS))
        assert [d.timestamp for d in delivered] == [r.timestamp for r in records]

        assert watermarks(c, topic, 0) == (0, RECORDS)
        assert watermarks(c, topic, 1) == (0, 0)

        queries = {T0 - 5 * STEP_MS: 0, T0: 0, T0 + 1: 1, T0 + STEP_MS: 1,
                   T0 + 1500: 2, T0 + 10 * STEP_MS - 1: 10, T0 + 10 * STEP_MS: 10,
                   T0 + 25 * STEP_MS + 999: 26, T0 + (RECORDS - 1) * STEP_MS: RECORDS - 1}
        for ts, expected in queries.items():
            assert offset_for_time(c, topic, 0, ts) == expected, f"timestamp T0+{ts - T0}"
        # Later than every record: Kafka answers offset -1 ("no such offset").
        assert offset_for_time(c, topic, 0, T0 + RECORDS * STEP_MS) == OFFSET_END
        assert offset_for_time(c, topic, 1, T0) == OFFSET_END
        # The special timestamps -2 (earliest) and -1 (latest).
        assert offset_for_time(c, topic, 0, -2) == 0
        assert offset_for_time(c, topic, 0, -1) == RECORDS
    finally:
        c.close()


def test_admin_list_offsets_max_timestamp(server, topic):
    """KIP-734 through confluent-kafka's AdminClient: the record with the largest timestamp, not
    an ordinary timestamp search for -3 (which answered offset 0)."""
    from confluent_kafka.admin import OffsetSpec

    from kafka_util import admin

    create_topic(server.bootstrap, topic, 1)
    stamps = [T0, T0 + 1, T0 + 9 * STEP_MS, T0 + 2]  # the largest is at offset 2
    records = [Record(b"k", b"v%d" % i, partition=0, timestamp=ts) for i, ts in enumerate(stamps)]
    produce_all(producer(server.bootstrap), topic, records)
    tp = TopicPartition(topic, 0)
    client = admin(server.bootstrap)  # kept: a collected client never completes its futures
    specs = {"max": (OffsetSpec.max_timestamp(), 2), "earliest": (OffsetSpec.earliest(), 0),
             "latest": (OffsetSpec.latest(), len(stamps))}
    for name, (spec, expected) in specs.items():
        info = client.list_offsets({tp: spec})[tp].result(timeout=CLIENT_TIMEOUT_S)
        assert info.offset == expected, name
        if name == "max":
            assert info.timestamp == T0 + 9 * STEP_MS
