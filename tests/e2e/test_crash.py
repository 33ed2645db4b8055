"""Crash safety: SIGKILL during heavy acks=all produce, restart on the same data dir, repeat.

Every acknowledged record must be present exactly once at the offset its delivery report
gave, and every partition must stay gap-free (offsets 0..HW-1 all readable, consecutive).
Records whose produce was cut off by a kill may or may not be stored, but never twice
(the producer is idempotent and the restarted agent rebuilds producer state from segments).

Kills leave garbage: objects uploaded but never committed, and objects replaced by
consolidation whose deletion was pending. Both are recorded in the metadata store, so after
the last round the store holds exactly the objects live segments reference again within one
janitor period (shortened here by flags), however often the agent was restarted before.
In S3 mode the S3 server refuses and counts any second write to a key (conftest.py).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time

from kafka_util import assert_offsets_dense, consume_all, create_topic, producer

PARTITIONS = 3
ROUNDS = 20
SEED = 20261126
JANITOR_INTERVAL_S = 5
# Short maintenance periods, so the test sees garbage collected within its time.
MAINTENANCE_ARGS = [
    "--janitor-interval-ms", str(JANITOR_INTERVAL_S * 1000),
    "--janitor-min-age-ms", "3000",
    "--file-delete-delay-ms", "2000",
    "--consolidation-min-age-ms", "1000",
    "--consolidation-max-age-ms", "2000",
]
# One janitor period and its confirmation delay, then two of the deleter's 10 s periods (data
# acknowledged right before the wait is consolidated then, and the objects it replaces are due
# one period later), plus 10 s of slack for a loaded machine.
CONVERGE_S = JANITOR_INTERVAL_S + 2 + 2 * 10 + 10


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


def stored_keys(server, s3_server) -> set[str]:
    """Keys of every object in the agent's store (its bucket, or its local object root)."""
    if s3_server:
        bucket = server.extra_args[server.extra_args.index("--s3-bucket") + 1]
        return set(s3_server.list_keys(bucket))
    root = server.data_dir / "objects"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def referenced_keys(server) -> set[str]:
    """Keys of the objects the live segments' rows point at (read from the SQLite store)."""
    db = sqlite3.connect(f"file:{server.data_dir / 'metadata.db'}?mode=ro", uri=True)
    try:
        return {k for (k,) in db.execute("SELECT DISTINCT object_key FROM segments")}
    finally:
        db.close()


def wait_for_store_to_match_segments(server, s3_server, started: float) -> tuple[int, float]:
    """Waits until the store holds exactly the referenced objects; (objects, seconds since
    `started`, the last restart)."""
    while True:
        # Rows first: an object committed in between then only looks unreferenced for a round.
        referenced = referenced_keys(server)
        stored = stored_keys(server, s3_server)
        assert referenced <= stored, f"referenced objects missing: {sorted(referenced - stored)[:3]}"
        extra = stored - referenced
        if not extra:
            return len(stored), time.monotonic() - started
        assert time.monotonic() - started < CONVERGE_S, (
            f"{len(extra)} unreferenced objects still stored {CONVERGE_S} s after the last "
            f"restart, first: {sorted(extra)[:3]}")
        time.sleep(1)


def test_acknowledged_records_survive_repeated_sigkill(server_factory, topic, measurements,
                                                       s3_server):
    server = server_factory(extra_args=MAINTENANCE_ARGS)
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
        last_start = time.monotonic()
        loop.finish()
        produced += loop.produced
        failed += loop.failed
        acked.update(loop.acked)

    referenced = referenced_keys(server)
    garbage = len(stored_keys(server, s3_server) - referenced)
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

    objects, seconds = wait_for_store_to_match_segments(server, s3_server, last_start)
    summary = (f"rounds={ROUNDS} produced={produced} acknowledged={len(acked)} "
               f"failed={failed} recovered={len(stored)} unreferenced_objects_after_kills="
               f"{garbage} objects_after_cleanup={objects} cleanup_s_after_restart={seconds:.0f}")
    print(summary)
    measurements["crash test"] = summary
    assert not duplicates, f"{len(duplicates)} records stored twice, first: {duplicates[:3]}"
    assert not missing, f"{len(missing)} acknowledged records lost, first: {missing[:5]}"
    assert not moved, f"{len(moved)} records not at their acknowledged offset: {moved[:3]}"
    assert len(acked) > 0 and len(stored) >= len(acked)
