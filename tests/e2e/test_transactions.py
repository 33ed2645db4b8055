"""Transactions and exactly-once with confluent-kafka (librdkafka): transactional producers,
read_committed consumers, aborts, SIGKILL of the agent and of the producer mid-transaction, and
a consume-transform-produce loop with send_offsets_to_transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from kafka_util import client_trail, create_topic

PARTITIONS = 3


def txn_producer(bootstrap: str, txn_id: str, **overrides) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 10_000,
        "linger.ms": 5,
        "message.timeout.ms": 10_000,
    }
    conf.update(overrides)
    prod = Producer(conf)
    prod.init_transactions(30)
    return prod


def committed_reader(bootstrap: str, **overrides) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4().hex[:8]}",
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    conf.update(overrides)
    return Consumer(conf)


def read_values(bootstrap: str, topic: str, partitions: int = PARTITIONS,
                isolation: str = "read_committed", settle: float = 3.0,
                deadline: float = 60.0, trail=None, explain=lambda partitions: None
                ) -> list[bytes]:
    """Every value a consumer at `isolation` reads, once it reached the end of every
    partition and nothing more arrived for `settle` seconds. With a `trail` path the
    consumer's fetch debug lines go there; `explain` is called with the partitions whose end
    was never seen, before the failure is raised."""
    debug = client_trail(trail, "fetch,topic") if trail else {}
    c = committed_reader(bootstrap, **{"isolation.level": isolation}, **debug)
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    at_end: set[int] = set()
    quiet_since = time.monotonic()
    stop = time.monotonic() + deadline
    try:
        while time.monotonic() < stop:
            msg = c.poll(0.2)
            if msg is None:
                if len(at_end) == partitions and time.monotonic() - quiet_since >= settle:
                    return values
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    at_end.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            at_end.discard(msg.partition())
            quiet_since = time.monotonic()
            values.append(msg.value())
        explain(set(range(partitions)) - at_end)
        raise AssertionError(f"no quiet end of {topic} within {deadline}s: {len(values)} read; "
                             f"{not_at_end(c, topic, partitions, at_end)}")
    finally:
        c.close()


def not_at_end(c: Consumer, topic: str, partitions: int, at_end: set[int]) -> str:
    """Where each partition a reader never saw the end of stands: its position and watermarks
    (for the reader's isolation level), or why they could not be had."""
    parts = []
    for p in sorted(set(range(partitions)) - at_end):
        tp = TopicPartition(topic, p)
        try:
            position = c.position([tp])[0].offset
            low, high = c.get_watermark_offsets(tp, timeout=5, cached=False)
            leader = c.list_topics(topic, timeout=5).topics[topic].partitions[p].leader
            parts.append(f"partition {p}: position {position}, watermarks {low}..{high}, "
                         f"leader {leader}")
        except KafkaException as e:
            parts.append(f"partition {p}: {e}")
    return "not at the end: " + "; ".join(parts)


def send_txn(prod: Producer, topic: str, values: list[bytes], commit: bool) -> None:
    prod.begin_transaction()
    for i, v in enumerate(values):
        prod.produce(topic, v, key=v, partition=i % PARTITIONS)
    prod.flush(30)
    if commit:
        prod.commit_transaction(30)
    else:
        prod.abort_transaction(30)


def test_read_committed_sees_commits_once_and_never_aborts(server, topic):
    create_topic(server.bootstrap, topic, PARTITIONS)
    prod = txn_producer(server.bootstrap, f"txn-{topic}")
    expected = []
    for round_ in range(6):
        values = [f"r{round_}-{i}".encode() for i in range(30)]
        commit = round_ % 2 == 0
        send_txn(prod, topic, values, commit)
        if commit:
            expected += values
    # An open transaction holds read_committed consumers back at its first offset.
    prod.begin_transaction()
    for i in range(10):
        prod.produce(topic, b"open-%d" % i, partition=i % PARTITIONS)
    prod.flush(30)

    got = read_values(server.bootstrap, topic)
    assert sorted(got) == sorted(expected), "committed exactly once, nothing aborted or open"
    uncommitted = read_values(server.bootstrap, topic, isolation="read_uncommitted")
    assert len(uncommitted) == 6 * 30 + 10, "read_uncommitted sees every data record"

    prod.commit_transaction(30)
    got = read_values(server.bootstrap, topic)
    assert sorted(got) == sorted(expected + [b"open-%d" % i for i in range(10)])


PRODUCER_SCRIPT = textwrap.dedent("""
    import sys, time
    from confluent_kafka import Producer
    bootstrap, topic, txn_id = sys.argv[1:4]
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "transaction.timeout.ms": 60000, "linger.ms": 5})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(100):
        p.produce(topic, b"doomed-%d" % i, partition=i % 3)
    p.flush(30)
    print("sent", flush=True)
    time.sleep(600)
""")


def test_a_killed_producers_transaction_is_aborted_by_its_successor(server, topic):
    create_topic(server.bootstrap, topic, PARTITIONS)
    txn_id = f"txn-{topic}"
    child = subprocess.Popen([sys.executable, "-c", PRODUCER_SCRIPT, server.bootstrap, topic,
                              txn_id], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "sent"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # The next instance fences the killed one; its open transaction is aborted.
    prod = txn_producer(server.bootstrap, txn_id)
    values = [b"after-%d" % i for i in range(50)]
    send_txn(prod, topic, values, commit=True)
    got = read_values(server.bootstrap, topic)
    assert sorted(got) == sorted(values)
    assert len(read_values(server.bootstrap, topic, isolation="read_uncommitted")) == 150


def test_an_abandoned_transaction_times_out(server, topic):
    create_topic(server.bootstrap, topic, PARTITIONS)
    child = subprocess.Popen([sys.executable, "-c", PRODUCER_SCRIPT.replace("60000", "3000"),
                              server.bootstrap, topic, f"txn-{topic}"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "sent"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # Nobody re-initializes the transactional id: the coordinator aborts on the timeout, and
    # read_committed consumers move past it.
    other = txn_producer(server.bootstrap, f"other-{topic}")
    send_txn(other, topic, [b"later"], commit=True)
    deadline = time.monotonic() + 30
    got = read_values(server.bootstrap, topic, settle=1.0)
    while got != [b"later"] and time.monotonic() < deadline:
        assert got == [], "only the committed record, once the abandoned one is aborted"
        got = read_values(server.bootstrap, topic, settle=1.0)
    assert got == [b"later"]
    assert len(read_values(server.bootstrap, topic, isolation="read_uncommitted")) == 101


def test_agent_sigkill_mid_transaction(server, topic):
    create_topic(server.bootstrap, topic, PARTITIONS)
    txn_id = f"txn-{topic}"
    prod = txn_producer(server.bootstrap, txn_id)
    committed = [b"before-%d" % i for i in range(40)]
    send_txn(prod, topic, committed, commit=True)
    prod.begin_transaction()
    for i in range(40):
        prod.produce(topic, b"lost-%d" % i, partition=i % PARTITIONS)
    prod.flush(30)
    server.kill()
    server.start()
    # The old producer's transaction cannot commit any more (or, if it can, it is complete);
    # a new instance aborts whatever is left open.
    try:
        prod.commit_transaction(10)
        committed += [b"lost-%d" % i for i in range(40)]
    except KafkaException:
        pass
    prod2 = txn_producer(server.bootstrap, txn_id)
    after = [b"after-%d" % i for i in range(40)]
    send_txn(prod2, topic, after, commit=True)
    got = read_values(server.bootstrap, topic)
    assert sorted(got) == sorted(committed + after)


CTP_SCRIPT = textwrap.dedent("""
    import sys
    from confluent_kafka import Consumer, Producer, TopicPartition
    bootstrap, source, sink, group, txn_id, per_txn = sys.argv[1:7]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 500})
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "transaction.timeout.ms": 10000, "linger.ms": 5})
    p.init_transactions(30)
    c.subscribe([source])
    idle = 0
    while idle < 15:
        msgs = [m for m in c.consume(int(per_txn), 1.0) if not m.error()]
        if not msgs:
            idle += 1
            continue
        idle = 0
        p.begin_transaction()
        for m in msgs:
            p.produce(sink, b"out-" + m.value(), partition=m.partition())
        p.send_offsets_to_transaction(c.position(c.assignment()),
                                      c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        print("committed", len(msgs), flush=True)
    print("done", flush=True)
""")


def run_ctp(bootstrap: str, source: str, sink: str, group: str, txn_id: str,
            per_txn: int = 7) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CTP_SCRIPT, bootstrap, source, sink, group,
                             txn_id, str(per_txn)], stdout=subprocess.PIPE, text=True)


def test_consume_transform_produce_is_exactly_once_across_sigkills(server, topic):
    source, sink = f"{topic}-in", f"{topic}-out"
    create_topic(server.bootstrap, source, PARTITIONS)
    create_topic(server.bootstrap, sink, PARTITIONS)
    plain = Producer({"bootstrap.servers": server.bootstrap, "enable.idempotence": True})
    inputs = [b"m%04d" % i for i in range(600)]
    for i, v in enumerate(inputs):
        plain.produce(source, v, partition=i % PARTITIONS)
    assert plain.flush(30) == 0
    group, txn_id = f"ctp-{topic}", f"ctp-{topic}"

    # The loop is killed twice after some transactions, then once more with the agent.
    for kill_agent in (False, False, True):
        child = run_ctp(server.bootstrap, source, sink, group, txn_id)
        lines = 0
        while lines < 5:
            line = child.stdout.readline()
            assert line, "the loop ended early"
            lines += line.startswith("committed")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if kill_agent:
            server.kill()
            server.start()
    child = run_ctp(server.bootstrap, source, sink, group, txn_id)
    out, _ = child.communicate(timeout=180)
    assert child.returncode == 0 and out.strip().endswith("done"), out[-500:]

    got = read_values(server.bootstrap, sink)
    assert sorted(got) == sorted(b"out-" + v for v in inputs), (
        f"{len(got)} outputs for {len(inputs)} inputs, {len(set(got))} distinct")
