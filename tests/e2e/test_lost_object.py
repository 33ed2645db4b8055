"""A committed object that vanished from the store is data loss, and is reported as such.

The reader must not hide it: the consumer gets an error it reports (not KAFKA_STORAGE_ERROR,
which librdkafka retries silently forever), and the agent logs a warning naming the object.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, TopicPartition

from kafka_util import consumer, create_topic, producer


def test_a_deleted_object_is_an_error_the_consumer_reports(server, topic, s3_server):
    if s3_server:
        pytest.skip("deletes the object from the local store's directory")
    create_topic(server.bootstrap, topic, 1)
    p = producer(server.bootstrap)
    for i in range(20):
        p.produce(topic, value=b"v%03d" % i)
    assert p.flush(30) == 0
    objects = [f for f in (server.data_dir / "objects").rglob("*.obj")]
    assert objects, "the flush wrote a shared object"
    # A restart empties the write-through cache, so the read goes to the store.
    server.stop()
    for f in objects:
        f.unlink()
    server.start()

    c = consumer(server.bootstrap)
    c.assign([TopicPartition(topic, 0, 0)])
    errors: list[KafkaError] = []
    records = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not errors:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            errors.append(msg.error())
        else:
            records += 1
    c.close()
    assert records == 0
    assert errors, "the consumer saw no error for a lost object"
    assert errors[0].code() == KafkaError.UNKNOWN, errors[0]
    log = server.log_path.read_text(errors="replace")
    assert "segment object unreadable" in log and "WARN" in log, server.log_tail()
