"""DeleteRecords with a real client (librdkafka's AdminClient): the low watermark moves, a
consumer below it is reset to it (OFFSET_OUT_OF_RANGE, then auto.offset.reset), and the data
above it, and new produces, are untouched."""

from confluent_kafka import TopicPartition

from kafka_util import (Record, admin, consume_until, consumer, create_topic, produce_all,
                        producer)


def delete_before(bootstrap: str, topic: str, partition: int, offset: int) -> int:
    client = admin(bootstrap)
    futures = client.delete_records([TopicPartition(topic, partition, offset)],
                                    request_timeout=30, operation_timeout=30)
    (future,) = futures.values()
    return future.result(timeout=30).low_watermark


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30, cached=False)
    finally:
        c.close()


def test_delete_records_moves_the_low_watermark(server, topic):
    create_topic(server.bootstrap, topic, 1)
    records = [Record(b"k", b"v%03d" % i, partition=0) for i in range(100)]
    produce_all(producer(server.bootstrap), topic, records, flush_every=10)

    assert delete_before(server.bootstrap, topic, 0, 45) == 45
    assert watermarks(server.bootstrap, topic, 0) == (45, 100)

    # A consumer starting at 0 is out of range and resets to the earliest retained offset.
    got = consume_until(server.bootstrap, topic, {0: 100})[0]
    assert [r.offset for r in got] == list(range(45, 100))
    assert all(r.value == b"v%03d" % r.offset for r in got)

    # -1 deletes everything; the partition keeps its offsets for new records.
    assert delete_before(server.bootstrap, topic, 0, -1) == 100
    (again,) = produce_all(producer(server.bootstrap), topic, [Record(b"k", b"new", partition=0)])
    assert again.offset == 100
    assert watermarks(server.bootstrap, topic, 0) == (100, 101)
