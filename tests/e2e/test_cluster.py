"""Several agents sharing PostgreSQL metadata and one object-store directory: SIGKILL one while
an idempotent producer writes, and every acknowledged record is still there exactly once, in
order; a joining agent gets its share of the partitions."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from harness import free_port
from kafka_util import admin, assert_offsets_dense, client_trail, consume_until, create_topic, \
    high_watermarks, producer, trail_lines

PARTITIONS = 12
# Short, so the test is quick; failover takes about one TTL. STREAMHOUSE_E2E_LEASE_TTL_MS=10000
# measures it with the agent's default TTL.
LEASE_TTL_MS = int(os.environ.get("STREAMHOUSE_E2E_LEASE_TTL_MS", "3000"))
HEARTBEAT_INTERVAL_MS = LEASE_TTL_MS // 6
# Delivery reports this soon after the kill answer requests the dead agent had already served.
IN_FLIGHT_GRACE_S = 0.25
SETTLE_TIMEOUT_S = 30.0
# The agents' log filter: besides the default, each partition's lease, writer, refused produce
# and fetch, and idempotent retry, so that a rare failure leaves the trail that explains it.
AGENT_LOG = ("info,streamhouse_kafka::handlers::produce=debug,"
             "streamhouse_kafka::handlers::fetch=debug,streamhouse_kafka::cluster=debug,"
             "streamhouse_kafka::handlers::metadata=debug,streamhouse_storage::writer=debug")


class TempPostgres:
    """A throwaway PostgreSQL server from the local binaries, in a temporary directory."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        # initdb refuses to run as root; the server then runs as `postgres`, which needs a
        # directory it can reach (pytest's tmp_path is private to root).
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="streamhouse-pg-"))
        if self.run_as:
            shutil.chown(self.dir, self.run_as, self.run_as)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        cmd = [str(self.bin_dir / program), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}"

    def settings(self) -> str:
        """The server's command-line settings."""
        return (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=200")

    def start(self) -> "TempPostgres":
        data = str(self.dir / "data")
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self.run_server()
        return self

    def run_server(self) -> None:
        """Starts the server on the initialised data directory."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", self.settings(), "-l",
                  str(self.dir / "server.log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bin_dir() -> Path | None:
    """Newest /usr/lib/postgresql/<version>/bin with the server binaries."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                        reverse=True)
    return next((d for d in candidates
                 if all((d / b).is_file() for b in ("initdb", "pg_ctl", "postgres"))), None)


def required_postgres_bin_dir() -> Path:
    """The PostgreSQL server binaries; the test fails without them when
    STREAMHOUSE_REQUIRE_POSTGRES is set (as in CI), else it is skipped."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        if os.environ.get("STREAMHOUSE_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL server binaries are required "
                        "(run scripts/setup-test-deps.sh)", pytrace=False)
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    return bin_dir


@pytest.fixture
def postgres():
    """URL of a fresh PostgreSQL database, stopped after the test."""
    server = TempPostgres(required_postgres_bin_dir()).start()
    yield server.url
    server.stop()


@pytest.fixture
def cluster(postgres, server_factory, tmp_path, monkeypatch):
    """`cluster(node_id)` starts an agent of one cluster: shared PostgreSQL metadata and a
    shared object-store directory (standing in for a bucket). PostgreSQL is set up first so
    it is torn down last: the agents deregister from it when stopped."""
    monkeypatch.setenv("RUST_LOG", AGENT_LOG)
    shared_objects = tmp_path / "shared-objects"
    shared_objects.mkdir()

    def start(node_id: int):
        return server_factory(extra_args=[
            "--node-id", str(node_id),
            "--metadata-url", postgres,
            "--object-store-root", str(shared_objects),
            "--lease-ttl-ms", str(LEASE_TTL_MS),
            "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
        ])

    return start


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> leader node id, from Metadata."""
    meta = admin(bootstrap).list_topics(topic=topic, timeout=10)
    return {p: m.leader for p, m in meta.topics[topic].partitions.items()}


def wait_for_leaders(bootstrap: str, topic: str, nodes: set[int]) -> dict[int, int]:
    """Waits until the partitions are led by exactly `nodes`, evenly (each at most one more
    than its fair share)."""
    fair = math.ceil(PARTITIONS / len(nodes))
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        current = leaders(bootstrap, topic)
        counts = Counter(current.values())
        if set(counts) == nodes and max(counts.values()) <= fair + 1:
            return current
        assert time.monotonic() < deadline, f"leaders did not spread over {nodes}: {current}"
        time.sleep(0.2)


class ContinuousProducer(threading.Thread):
    """Produces numbered records round-robin over the partitions until stopped; keeps every
    delivery report with the time it arrived."""

    def __init__(self, bootstrap: str, topic: str, trail: Path | None = None):
        super().__init__(daemon=True)
        self.topic = topic
        # The client's own account of errors, retries, sequences and epochs goes to `trail`.
        debug = client_trail(trail, "eos,msg,metadata") if trail else {}
        self.producer = producer(bootstrap, **{"enable.idempotence": True}, **debug)
        self.acked: list[tuple[int, int, int, float]] = []  # partition, offset, seq, time
        self.errors: list[str] = []
        self.error_partitions: set[int] = set()
        self.stopping = threading.Event()
        self.unflushed = 0

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.errors.append(f"{err} (partition {msg.partition()})")
            self.error_partitions.add(msg.partition())
        else:
            self.acked.append((msg.partition(), msg.offset(), int(msg.value()), time.monotonic()))

    def run(self) -> None:
        seq = 0
        while not self.stopping.is_set():
            for _ in range(20):
                self.producer.produce(self.topic, value=b"%09d" % seq, partition=seq % PARTITIONS,
                                      on_delivery=self._on_delivery)
                seq += 1
            self.producer.poll(0.01)
        self.unflushed = self.producer.flush(60)

    def finish(self, explain=lambda partitions: None) -> None:
        """Stops producing and waits for every delivery report; fails on any error, calling
        `explain` with the partitions concerned first."""
        self.stopping.set()
        self.join(timeout=90)
        assert not self.is_alive(), "producer did not finish"
        assert self.unflushed == 0, f"{self.unflushed} records never delivered"
        if self.errors:
            explain(self.error_partitions)
        assert not self.errors, f"{len(self.errors)} delivery errors, first: {self.errors[:5]}"


def test_sigkilled_agent_loses_no_acknowledged_record(cluster, topic, measurements, tmp_path):
    """Kill one of three agents mid-stream, then bring it back and add a fourth, all while an
    idempotent producer writes: every acknowledged record ends up stored exactly once."""
    agents = [cluster(n) for n in range(3)]
    bootstrap = ",".join(a.bootstrap for a in agents)
    create_topic(agents[0].bootstrap, topic, PARTITIONS)
    before = wait_for_leaders(bootstrap, topic, {0, 1, 2})

    client_log = tmp_path / "producer.log"
    writer = ContinuousProducer(bootstrap, topic, trail=client_log)
    writer.start()
    time.sleep(3)
    victim = 2
    orphaned = {p for p, node in before.items() if node == victim}
    agents[victim].kill()
    killed_at = time.monotonic()
    failover_s = wait_for_takeover(writer, orphaned, killed_at)
    measurements["cluster failover: SIGKILL -> first acknowledged produce to the dead "
                 f"agent's partitions (lease TTL {LEASE_TTL_MS} ms)"] = f"{failover_s:.2f} s"
    print(f"failover: {failover_s:.2f} s from SIGKILL to the first produce acknowledged for "
          f"the dead agent's partitions {sorted(orphaned)}")

    # The dead agent comes back and a fourth joins: partitions are handed over (flushed, then
    # released) while the producer keeps writing, and spread over all four.
    agents[victim].start()
    agents.append(cluster(3))
    everyone = ",".join(a.bootstrap for a in agents)
    wait_for_leaders(everyone, topic, {0, 1, 2, 3})
    time.sleep(2)
    writer.finish()
    spread = wait_for_leaders(everyone, topic, {0, 1, 2, 3})
    assert max(Counter(spread.values()).values()) <= math.ceil(PARTITIONS / 4) + 1, spread
    producer_events = r"error|ERRSEQ|DUPSEQ|UNKPID|bump|drain|[Rr]etr"
    assert_exactly_once_in_order(
        everyone, topic, writer.acked,
        explain=lambda ps: print(trail(agents, client_log, producer_events, ps)))


def trail(agents, client_log: Path, client_events: str, partitions: set[int]) -> str:
    """What the client (its lines matching `client_events`) and each agent (lease, writer,
    refusals, retries) logged about `partitions` (the first three): why records went missing,
    were stored twice, or could not be read."""
    out = []
    for p in sorted(partitions)[:3]:
        out.append(f"--- client, partition {p}")
        out += [line for line in trail_lines(client_log, rf"\[{p}\]", keep=10_000)
                if re.search(client_events, line)][-12:]
        for i, agent in enumerate(agents):
            out.append(f"--- agent {i}, partition {p}")
            out += trail_lines(agent.log_path, rf"partition[= ]{p}\b", keep=8)
    return "\n".join(out)


def wait_for_takeover(writer: ContinuousProducer, orphaned: set[int], killed_at: float) -> float:
    """Seconds from the kill until the first record for a dead agent's partition was
    acknowledged again; waits until all of them take records again."""
    deadline = killed_at + SETTLE_TIMEOUT_S
    while True:
        resumed = [(p, t) for p, _, _, t in list(writer.acked)
                   if p in orphaned and t > killed_at + IN_FLIGHT_GRACE_S]
        if {p for p, _ in resumed} == orphaned:
            return min(t for _, t in resumed) - killed_at
        assert time.monotonic() < deadline, f"partitions {orphaned} not taken over"
        time.sleep(0.05)


def read_everything(bootstrap: str, topic: str, attempts: int = 3):
    """Every record of the topic, read again when the read fails on the client side: right
    after a fault a fresh client may still meet connections the fault left half-open, or briefly
    lack a partition's leader (librdkafka then fails with `_DESTROY_BROKER` or a timeout)."""
    for attempt in range(attempts):
        try:
            ends = high_watermarks(bootstrap, topic, range(PARTITIONS))
            return consume_until(bootstrap, topic, ends)
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(LEASE_TTL_MS / 1000)


def assert_exactly_once_in_order(bootstrap: str, topic: str,
                                 acked: list[tuple[int, int, int, float]],
                                 explain=lambda partitions: None) -> None:
    """Every acknowledged record is stored once, at its acknowledged offset, partitions are
    gap-free and hold their records in production order. librdkafka acknowledges a batch
    without an offset when a later batch's success proves it stored (its own answer was lost
    with a timed-out request); such a record must be in its partition all the same. On a
    failure, `explain` is called with the partitions concerned."""
    got = read_everything(bootstrap, topic)
    assert_offsets_dense(got)
    stored = {(r.partition, r.offset): int(r.value) for recs in got.values() for r in recs}
    seqs = Counter(stored.values())
    duplicated = [s for s, n in seqs.items() if n > 1]
    if duplicated:
        twice = {key: s for key, s in stored.items() if s in set(duplicated[:5])}
        explain({p for p, _ in twice})
        raise AssertionError(f"{len(duplicated)} records stored twice, e.g. (partition, offset) "
                             f"-> record {sorted(twice.items())}")
    where = {s: key for key, s in stored.items()}
    missing = [(p, o, s) for p, o, s, _ in acked
               if (stored.get((p, o)) != s if o is not None else where.get(s, (None,))[0] != p)]
    if missing:
        explain({p for p, _, _ in missing})
    assert not missing, f"{len(missing)} acknowledged records not stored as acknowledged, " \
                        f"e.g. {missing[:5]} (partition, offset, record); stored at " \
                        f"{[where.get(s) for _, _, s in missing[:5]]}"
    for p, recs in got.items():
        values = [int(r.value) for r in recs]
        assert values == sorted(values), f"partition {p} is out of production order"


def commit_across(prod, topic: str, partitions: tuple[int, int], values: list[bytes]) -> bool:
    """One transaction writing `values` to both partitions; retried as librdkafka prescribes
    while agents fail over. Whether it committed."""
    for _ in range(5):
        try:
            prod.begin_transaction()
            for i, v in enumerate(values):
                prod.produce(topic, v, partition=partitions[i % 2])
            prod.flush(60)
            while True:
                try:
                    prod.commit_transaction(60)
                    return True
                except KafkaException as e:
                    if not e.args[0].retriable():
                        raise
        except KafkaException as e:
            if not e.args[0].txn_requires_abort():
                raise
            prod.abort_transaction(60)
    return False


def test_a_transaction_over_two_agents_survives_either_sigkill(cluster, topic, tmp_path):
    """A transaction over partitions led by two agents commits (or aborts) on both, whichever
    of them is SIGKILLed right after the commit, before or while it writes its markers; a
    read_committed consumer sees every committed record once and nothing else."""
    from test_transactions import read_values
    agents = [cluster(n) for n in range(3)]
    bootstrap = ",".join(a.bootstrap for a in agents)
    create_topic(agents[0].bootstrap, topic, PARTITIONS)
    led = wait_for_leaders(bootstrap, topic, {0, 1, 2})
    pa = next(p for p, n in led.items() if n == 0)
    pb = next(p for p, n in led.items() if n == 1)
    prod = producer(bootstrap, **{"transactional.id": f"txn-{topic}",
                                  "transaction.timeout.ms": 60_000,
                                  "message.timeout.ms": 60_000})
    prod.init_transactions(60)
    expected: list[bytes] = []
    for victim in (0, 1):
        batch = [b"v%d-before-%d" % (victim, i) for i in range(40)]
        assert commit_across(prod, topic, (pa, pb), batch)
        expected += batch
        # Killed right after the commit: its markers may still be pending; the next leader of
        # its partition writes them.
        agents[victim].kill()
        batch = [b"v%d-during-%d" % (victim, i) for i in range(40)]
        if commit_across(prod, topic, (pa, pb), batch):
            expected += batch
        agents[victim].start()
        wait_for_leaders(bootstrap, topic, {0, 1, 2})
    reader_log = tmp_path / "reader.log"
    got = read_values(bootstrap, topic, partitions=PARTITIONS, deadline=90, trail=reader_log,
                      explain=lambda ps: print(trail(agents, reader_log, ".", ps)))
    assert sorted(got) == sorted(expected), (
        f"{len(got)} read, {len(expected)} committed, {len(set(got))} distinct")
