"""Consumer groups with real clients: librdkafka consumers (in subprocesses, so one can be
SIGKILLed without leaving the group) and kcat's balanced consumer, against one server.

Run as a script, this module is the consumer worker: `python test_groups.py worker CONF_JSON`.
It subscribes, prints `ASSIGN`/`REVOKE`/`LOST p,p,...` on rebalances and `M partition offset`
for every record, and closes cleanly (committing) when its stdin is closed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException,
                             TopicPartition)

from kafka_util import Record, admin, create_topic, produce_all, producer

PARTITIONS = 6
WAIT_S = 90.0


# ---- the worker (runs in a subprocess) -------------------------------------------------------

def worker_main(conf_json: str) -> None:
    spec = json.loads(conf_json)
    out_lock = threading.Lock()

    def emit(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def on_event(kind):
        return lambda _consumer, parts: emit(
            f"{kind} " + ",".join(str(p.partition) for p in parts))

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    consumer = Consumer(spec["conf"])
    consumer.subscribe([spec["topic"]], on_assign=on_event("ASSIGN"),
                       on_revoke=on_event("REVOKE"), on_lost=on_event("LOST"))
    while not stop.is_set():
        lines = []
        for msg in consumer.consume(num_messages=5000, timeout=0.2):
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    emit(f"ERROR {msg.error()}")
                continue
            lines.append(f"M {msg.partition()} {msg.offset()}")
        if lines:
            emit("\n".join(lines))
    consumer.close()
    emit("CLOSED")


# ---- driving workers from the test -----------------------------------------------------------

class Worker:
    """One consumer subprocess and everything it reported."""

    def __init__(self, bootstrap: str, group: str, topic: str, strategy: str = "range",
                 session_ms: int = 6000, protocol: str = "classic"):
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 500,
            "socket.timeout.ms": 10000,
        }
        if protocol == "consumer":
            # KIP-848: the coordinator assigns and sets the session and heartbeat timing.
            conf.update({"group.protocol": "consumer", "group.remote.assignor": strategy})
        else:
            conf.update({"partition.assignment.strategy": strategy,
                         "session.timeout.ms": session_ms, "heartbeat.interval.ms": 500})
        self.lock = threading.Lock()
        self.records: list[tuple[int, int]] = []
        self.assigned: set[int] = set()
        self.errors: list[str] = []
        self.closed = False
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "worker",
             json.dumps({"conf": conf, "topic": topic})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            parts = {int(p) for p in rest.split(",") if p} if kind in ("ASSIGN", "REVOKE",
                                                                        "LOST") else set()
            with self.lock:
                if kind == "M":
                    p, o = rest.split()
                    self.records.append((int(p), int(o)))
                elif kind == "ASSIGN":
                    self.assigned |= parts
                elif kind in ("REVOKE", "LOST"):
                    self.assigned -= parts
                elif kind == "ERROR":
                    self.errors.append(rest)
                elif kind == "CLOSED":
                    self.closed = True

    def assignment(self) -> set[int]:
        with self.lock:
            return set(self.assigned)

    def received(self) -> list[tuple[int, int]]:
        with self.lock:
            return list(self.records)

    def stop(self) -> None:
        """Close cleanly (final commit, LeaveGroup) and wait."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.reader.join(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no commit, no LeaveGroup; the server must notice via the session timeout."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def wait_until(predicate, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def balanced(ws: list[Worker]) -> bool:
    """Every worker owns partitions, and together they own each partition exactly once."""
    owned = [w.assignment() for w in ws]
    return (all(owned) and sum(len(o) for o in owned) == PARTITIONS
            and set().union(*owned) == set(range(PARTITIONS)))


def produce_n(bootstrap: str, topic: str, start: int, count: int) -> dict[int, int]:
    """Produce `count` keyed records; returns the high watermark reached per partition."""
    records = (Record(f"k{i % 997}".encode(), f"v{i}".encode()) for i in range(start, start + count))
    delivered = produce_all(producer(bootstrap, **{"linger.ms": 20, "batch.num.messages": 10000}),
                            topic, records)
    assert len(delivered) == count
    ends: dict[int, int] = {}
    for d in delivered:
        ends[d.partition] = max(ends.get(d.partition, 0), d.offset + 1)
    return ends


def expected_records(ends: dict[int, int]) -> set[tuple[int, int]]:
    return {(p, o) for p, end in ends.items() for o in range(end)}


def union(ws: list[Worker]) -> set[tuple[int, int]]:
    return {r for w in ws for r in w.received()}


def assert_no_errors(ws: list[Worker]) -> None:
    errors = [e for w in ws for e in w.errors]
    assert not errors, f"consumer errors: {errors[:5]}"


# ---- tests ------------------------------------------------------------------------------------

def test_three_consumers_share_100k_records_exactly_once(server, topic, workers):
    create_topic(server.bootstrap, topic, PARTITIONS)
    workers += [Worker(server.bootstrap, "g-exact", topic) for _ in range(3)]
    wait_until(lambda: balanced(workers), "three consumers to split six partitions")

    ends = produce_n(server.bootstrap, topic, 0, 100_000)
    want = expected_records(ends)
    wait_until(lambda: union(workers) >= want, "every record to be consumed")
    for w in workers:
        w.stop()
    assert_no_errors(workers)

    received = [r for w in workers for r in w.received()]
    assert len(received) == len(set(received)) == 100_000, "a record was delivered twice"
    assert set(received) == want
    # No partition was read by two consumers.
    owners = [{p for p, _ in w.received()} for w in workers]
    assert sum(len(o) for o in owners) == PARTITIONS


def test_killed_consumer_partitions_are_taken_over(server, topic, workers):
    create_topic(server.bootstrap, topic, PARTITIONS)
    workers += [Worker(server.bootstrap, "g-kill", topic, session_ms=6000) for _ in range(3)]
    wait_until(lambda: balanced(workers), "three consumers to split six partitions")
    first = produce_n(server.bootstrap, topic, 0, 50_000)
    wait_until(lambda: union(workers) >= expected_records(first), "the first half")

    victim, survivors = workers[0], workers[1:]
    orphaned = victim.assignment()
    victim.kill()
    # The server notices the missing heartbeats after the session timeout and rebalances.
    wait_until(lambda: balanced(survivors), "survivors to take over the victim's partitions")
    assert orphaned <= survivors[0].assignment() | survivors[1].assignment()

    totals = produce_n(server.bootstrap, topic, 50_000, 50_000)
    want = expected_records(totals)
    wait_until(lambda: union(workers) >= want, "every record to be consumed")
    assert_no_errors(survivors)
    # At-least-once, no gaps: everything after the kill reached the survivors.
    after_kill = want - expected_records(first)
    assert union(survivors) >= after_kill
    assert any(p in orphaned for p, _ in union(survivors))


def test_restarted_consumer_resumes_from_committed_offsets(server, topic):
    create_topic(server.bootstrap, topic, 2)
    first = produce_n(server.bootstrap, topic, 0, 1_000)
    group = "g-resume"
    got = consume_in_group(server.bootstrap, group, topic, expected_records(first))
    assert got == expected_records(first)

    second = produce_n(server.bootstrap, topic, 1_000, 500)
    new = expected_records(second) - expected_records(first)
    got_again = consume_in_group(server.bootstrap, group, topic, new)
    assert got_again == new, "the restarted consumer re-read committed records"


def consume_in_group(bootstrap: str, group: str, topic: str, want: set[tuple[int, int]],
                     **overrides) -> set[tuple[int, int]]:
    """Consume in `group` until `want` arrived (plus a short grace for extras), commit, close."""
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000}
    conf.update(overrides)
    c = Consumer(conf)
    c.subscribe([topic])
    got: set[tuple[int, int]] = set()
    deadline = time.monotonic() + WAIT_S
    grace_until = None
    try:
        while time.monotonic() < deadline:
            for msg in c.consume(num_messages=1000, timeout=0.2):
                if msg.error():
                    raise KafkaException(msg.error())
                got.add((msg.partition(), msg.offset()))
            if got >= want and grace_until is None:
                grace_until = time.monotonic() + 1.0
            if grace_until is not None and time.monotonic() >= grace_until:
                break
        c.commit(asynchronous=False)
    finally:
        c.close()
    return got


@pytest.mark.parametrize("protocol,strategy", [
    ("classic", "range"), ("classic", "roundrobin"), ("classic", "cooperative-sticky"),
    # KIP-848 (group.protocol=consumer) with the coordinator's own assignors.
    ("consumer", "uniform"), ("consumer", "range")])
def test_assignment_strategies_rebalance_without_gaps(server, topic, workers, protocol,
                                                      strategy):
    create_topic(server.bootstrap, topic, PARTITIONS)
    group = f"g-{protocol}-{strategy}"
    new_worker = lambda: Worker(server.bootstrap, group, topic, strategy, protocol=protocol)  # noqa: E731
    workers += [new_worker() for _ in range(2)]
    wait_until(lambda: balanced(workers), "two consumers to split the partitions")
    first = produce_n(server.bootstrap, topic, 0, 5_000)
    wait_until(lambda: union(workers) >= expected_records(first), "the first batch")

    # A third member joins: every strategy (eager or incremental) must end balanced.
    workers.append(new_worker())
    wait_until(lambda: balanced(workers), "three consumers to split the partitions")
    totals = produce_n(server.bootstrap, topic, 5_000, 5_000)
    wait_until(lambda: union(workers) >= expected_records(totals), "every record")

    # One leaves cleanly: the other two take its partitions.
    workers[0].stop()
    assert workers[0].closed
    wait_until(lambda: balanced(workers[1:]), "two consumers after one left")
    final = produce_n(server.bootstrap, topic, 10_000, 5_000)
    wait_until(lambda: union(workers) >= expected_records(final), "every record")
    assert_no_errors(workers)
    client = admin(server.bootstrap)  # must outlive its futures
    described = client.describe_consumer_groups([group])[group].result(timeout=30)
    assert described.partition_assignor == strategy
    assert len(described.members) == 2


def test_kcat_balanced_consumer(server, topic):
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.fail("kcat not installed: run scripts/setup-test-deps.sh", pytrace=False)
    create_topic(server.bootstrap, topic, 3)
    ends = produce_n(server.bootstrap, topic, 0, 300)
    proc = subprocess.run(
        [kcat, "-b", server.bootstrap, "-G", "g-kcat", topic, "-e", "-q", "-f", "%p %o\n",
         "-X", "auto.offset.reset=earliest"],
        capture_output=True, timeout=120, text=True)
    assert proc.returncode == 0, proc.stderr
    got = {tuple(map(int, line.split())) for line in proc.stdout.splitlines() if line.strip()}
    assert got == expected_records(ends)


def test_offsets_and_groups_survive_a_restart(server, topic):
    create_topic(server.bootstrap, topic, 3)
    ends = produce_n(server.bootstrap, topic, 0, 900)
    group = "g-durable"
    consume_in_group(server.bootstrap, group, topic, expected_records(ends))

    server.kill()
    server.start()

    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
    finally:
        c.close()
    assert {tp.partition: tp.offset for tp in committed} == {p: ends.get(p, 0) for p in range(3)}

    client = admin(server.bootstrap)
    listed = client.list_consumer_groups().result(timeout=30)
    assert group in {g.group_id for g in listed.valid}
    (offsets,) = client.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)]).values()
    result = offsets.result(timeout=30)
    assert {tp.partition: tp.offset for tp in result.topic_partitions
            if tp.topic == topic} == {p: ends.get(p, 0) for p in range(3)}

    # A consumer of the restarted server reads nothing old.
    extra = produce_n(server.bootstrap, topic, 900, 30)
    new = expected_records(extra) - expected_records(ends)
    assert consume_in_group(server.bootstrap, group, topic, new) == new


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "worker":
    worker_main(sys.argv[2])
