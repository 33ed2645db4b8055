"""Topic administration as AdminClient and producers see it (auto-creation off by default)."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from kafka_util import (CLIENT_TIMEOUT_S, Record, admin, consume_all, create_topic, produce_all,
                        producer, wait_for_topic)


def create_error(bootstrap, new_topic) -> int:
    client = admin(bootstrap)  # must outlive the future: destroying it fails the request
    futures = client.create_topics([new_topic], request_timeout=CLIENT_TIMEOUT_S)
    with pytest.raises(KafkaException) as info:
        futures[new_topic.topic].result(timeout=CLIENT_TIMEOUT_S)
    return info.value.args[0].code()


def test_create_existing_topic_is_rejected(server, topic):
    create_topic(server.bootstrap, topic, 3)
    assert create_error(server.bootstrap, NewTopic(topic, num_partitions=5,
                                                   replication_factor=1)) \
        == KafkaError.TOPIC_ALREADY_EXISTS
    meta = admin(server.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S)
    assert len(meta.topics[topic].partitions) == 3


def test_create_with_invalid_partition_count_is_rejected(server, topic):
    code = create_error(server.bootstrap, NewTopic(topic, num_partitions=0, replication_factor=1))
    assert code == KafkaError.INVALID_PARTITIONS
    assert topic not in admin(server.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S).topics


def test_producing_to_unknown_topic_does_not_create_it(server, topic):
    # librdkafka producers ask for auto-creation by default; the server must refuse it.
    prod = producer(server.bootstrap, **{"message.timeout.ms": 3000})
    errors = []
    prod.produce(topic, b"lost", on_delivery=lambda err, _msg: errors.append(err))
    assert prod.flush(CLIENT_TIMEOUT_S) == 0
    assert len(errors) == 1 and errors[0] is not None, errors
    assert topic not in admin(server.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S).topics


def test_auto_create_topics_flag(server_factory, topic):
    server = server_factory(extra_args=["--auto-create-topics"])
    delivered = produce_all(producer(server.bootstrap), topic, [Record(b"k", b"first")])
    meta = admin(server.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_S)
    partitions = len(meta.topics[topic].partitions)
    assert partitions >= 1
    wait_for_topic(server.bootstrap, topic, partitions)
    got = consume_all(server.bootstrap, topic, partitions)
    assert [(r.partition, r.offset, r.value) for recs in got.values() for r in recs] == \
        [(d.partition, d.offset, d.value) for d in delivered]
