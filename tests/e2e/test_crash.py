"""Crash safety: SIGKILL during heavy acks=all produce, restart on the same data dir, repeat.

Every acknowledged record must be present exactly once at the offset its delivery report
gave, and every partition must stay gap-free (offsets 0..HW-1 all readable, consecutive).
Records whose produce was cut off by a kill may or may not be stored, but never twice
(the producer is idempotent and the restarted agent rebuilds producer state from segments).
"""

from __future__ import annotations

import random
import threading
import time

from kafka_util import assert_offsets_dense, consume_all, create_topic, producer

PARTITIONS = 3
ROUNDS = 8
SEED = 20261126


class ProduceLoop:
    """Produces unique values as fast as librdkafka takes them until stopped."""

    def __init__(self, bootstrap: str, topic: str, round_no: int):
        self.topic = topic
        self.round_no = round_no
        self.producer = producer(bootstrap, **{
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": 45000,
            "compression.type": "lz4",
        })
        self.produced = 0
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            self.failed += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            value = b"r%02d-%08d" % (self.round_no, self.produced)
            try:
                self.producer.produce(self.topic, key=value[-3:], value=value,
                                      on_delivery=self._on_delivery)
                self.produced += 1
            except BufferError:
                self.producer.poll(0.01)
            self.producer.poll(0)

    def start(self) -> "ProduceLoop":
        self._thread.start()
        return self

    def finish(self) -> None:
        """Stop producing and wait for the outcome of every record sent."""
        self._stop.set()
        self._thread.join()
        remaining = self.producer.flush(60)
        assert remaining == 0, f"{remaining} records without a delivery report"


def test_acknowledged_records_survive_repeated_sigkill(server, topic, measurements):
    rng = random.Random(SEED)
    create_topic(server.bootstrap, topic, PARTITIONS)
    acked: dict[bytes, tuple[int, int]] = {}
    produced = failed = 0
    for round_no in range(ROUNDS):
        loop = ProduceLoop(server.bootstrap, topic, round_no).start()
        time.sleep(rng.uniform(0.3, 1.5))
        server.kill()
        assert server.proc.returncode == -9
        server.start()
        loop.finish()
        produced += loop.produced
        failed += loop.failed
        acked.update(loop.acked)

    got = consume_all(server.bootstrap, topic, PARTITIONS, timeout_s=60)
    assert_offsets_dense(got)
    stored = [r for recs in got.values() for r in recs]
    where: dict[bytes, tuple[int, int]] = {}
    duplicates = []
    for r in stored:
        if r.value in where:
            duplicates.append((r.value, where[r.value], (r.partition, r.offset)))
        where[r.value] = (r.partition, r.offset)
    missing = [v for v in acked if v not in where]
    moved = [(v, pos, where[v]) for v, pos in acked.items() if v in where and where[v] != pos]

    summary = (f"rounds={ROUNDS} produced={produced} acknowledged={len(acked)} "
               f"failed={failed} recovered={len(stored)}")
    print(summary)
    measurements["crash test"] = summary
    assert not duplicates, f"{len(duplicates)} records stored twice, first: {duplicates[:3]}"
    assert not missing, f"{len(missing)} acknowledged records lost, first: {missing[:5]}"
    assert not moved, f"{len(moved)} records not at their acknowledged offset: {moved[:3]}"
    assert len(acked) > 0 and len(stored) >= len(acked)
