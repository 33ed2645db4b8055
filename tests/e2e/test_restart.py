"""Durability: everything acknowledged with acks=all survives kill -9 and a restart."""

from kafka_util import Record, admin, consume_all, create_topic, produce_all, producer

PARTITIONS = 4
RECORDS = 20_000


def test_acknowledged_records_survive_sigkill(server, topic):
    create_topic(server.bootstrap, topic, PARTITIONS)
    records = (Record(f"k{i % 101}".encode(), f"r{i:06d}".encode()) for i in range(RECORDS))
    delivered = produce_all(producer(server.bootstrap, **{"compression.type": "lz4"}), topic,
                            records, flush_every=5_000)
    assert len(delivered) == RECORDS

    server.kill()
    assert server.proc.returncode == -9
    server.start()

    meta = admin(server.bootstrap).list_topics(timeout=30)
    assert topic in meta.topics, f"topic lost across restart: {sorted(meta.topics)}"
    assert len(meta.topics[topic].partitions) == PARTITIONS

    got = consume_all(server.bootstrap, topic, PARTITIONS)
    consumed = {(r.partition, r.offset): (r.key, r.value) for recs in got.values() for r in recs}
    assert len(consumed) == sum(len(recs) for recs in got.values())
    assert consumed == {(d.partition, d.offset): (d.key, d.value) for d in delivered}

    # The restarted server keeps appending after the recovered data, not over it.
    (again,) = produce_all(producer(server.bootstrap), topic,
                           [Record(b"after", b"restart", partition=0)])
    assert again.offset == len(got[0])


def test_sigterm_exits_cleanly_and_keeps_data(server, topic):
    create_topic(server.bootstrap, topic, 2)
    delivered = produce_all(producer(server.bootstrap), topic,
                            [Record(b"k%d" % i, b"v%d" % i) for i in range(500)])

    assert server.stop() == 0, "SIGTERM must lead to a clean exit (code 0) within the timeout"
    server.start()

    got = consume_all(server.bootstrap, topic, 2)
    consumed = {(r.partition, r.offset): r.value for recs in got.values() for r in recs}
    assert consumed == {(d.partition, d.offset): d.value for d in delivered}
