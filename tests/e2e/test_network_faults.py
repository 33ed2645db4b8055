"""Network faults made with network namespaces: agent A runs in its own namespace with three veth
links to the host, one its clients use, one to PostgreSQL and one to the S3 test server; agent B
runs on the host. A link going down makes packets vanish and TCP connections hang half-open, as
in a partition (`iptables` is not installed here; a link going down drops the same packets).
- A cut from PostgreSQL while an idempotent producer writes must move A's partitions to B
  within a few lease TTLs, keep every acknowledged record exactly once (A can commit nothing it
  cannot fence), and bring A back once the link heals.
- A cut from its clients keeps its leases: its partitions wait for the heal, then take records
  again, nothing lost.
- A cut from the object store (both agents on one S3 bucket) keeps its leases too: its
  producers get errors, never acknowledgements, until the heal; B keeps serving; nothing lost.
Agents do not talk to each other (they coordinate through the metadata store), so there is no
agent-to-agent link to cut. Delay and loss (`tc netem`: this kernel has no `sch_netem`) are
tested through a userspace proxy instead, in `test_slow_network.py`.

Needs root (CAP_NET_ADMIN) and `ip`; skipped otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

from confluent_kafka import Producer

from harness import StreamhouseServer
from test_cluster import (HEARTBEAT_INTERVAL_MS, LEASE_TTL_MS, PARTITIONS, ContinuousProducer,
                          TempPostgres, assert_exactly_once_in_order, postgres_bin_dir,
                          wait_for_leaders)
from test_metadata_faults import acked_between, wait_until_all_take_records
from kafka_util import create_topic
from s3 import CREDENTIALS, MotoServer

CLIENT_NET = ("10.200.0.1", "10.200.0.2")  # host side, namespace side
DB_NET = ("10.201.0.1", "10.201.0.2")
S3_NET = ("10.202.0.1", "10.202.0.2")
# Service is back within this after a cut or a heal (several lease TTLs plus client backoff).
RECOVERY_LIMIT_S = 6 * LEASE_TTL_MS / 1000 + 10


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Namespace:
    """A network namespace with a client link, a database link and an object-store link to
    the host."""

    def __init__(self):
        # `links` first: remove() reads it if creating the namespace fails half-way.
        self.links: dict[str, str] = {}
        self.name = f"sh{uuid.uuid4().hex[:6]}"
        ip("netns", "add", self.name)
        try:
            for role, (host, inner) in (("cl", CLIENT_NET), ("db", DB_NET), ("s3", S3_NET)):
                outside, inside = f"{self.name}{role}", f"{self.name}{role}n"
                ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                ip("link", "set", inside, "netns", self.name)
                ip("addr", "add", f"{host}/30", "dev", outside)
                ip("link", "set", outside, "up")
                self.exec("ip", "addr", "add", f"{inner}/30", "dev", inside)
                self.exec("ip", "link", "set", inside, "up")
                self.links[role] = outside
            self.exec("ip", "link", "set", "lo", "up")
        except Exception:
            self.remove()
            raise

    def exec(self, *cmd: str) -> None:
        ip("netns", "exec", self.name, *cmd)

    def set_link(self, role: str, up: bool) -> None:
        """Takes the host side of a link down (the namespace is cut off on it) or up."""
        ip("link", "set", self.links[role], "up" if up else "down")

    def remove(self) -> None:
        for outside in self.links.values():
            subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class NamespacedServer(StreamhouseServer):
    """An agent inside `namespace`, listening on its client address there."""

    def __init__(self, *args, namespace: Namespace, host: str, **kwargs):
        self.namespace = namespace
        self.host = host
        super().__init__(*args, **kwargs)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/health"

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--http-addr") + 1] = f"{self.host}:{self.http_port}"
        return ["ip", "netns", "exec", self.namespace.name, *cmd]


class ReachablePostgres(TempPostgres):
    """PostgreSQL also listening on the host side of the namespaces' database link."""

    def settings(self) -> str:
        return super().settings().replace("listen_addresses=127.0.0.1",
                                          f"listen_addresses=127.0.0.1,{DB_NET[0]}")

    def start(self) -> "ReachablePostgres":
        data = str(self.dir / "data")
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        with open(self.dir / "data" / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {DB_NET[0]}/30 trust\n")
        self.run_server()
        return self

    def url_from(self, host: str) -> str:
        return f"postgres://postgres@{host}:{self.port}/postgres"


@pytest.fixture
def namespace():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and `ip`")
    try:
        ns = Namespace()
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create a network namespace: {e.stderr}")
    yield ns
    ns.remove()


@pytest.fixture
def reachable_postgres(namespace):
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    server = ReachablePostgres(bin_dir).start()
    yield server
    server.stop()


class Pair:
    """Agent A in the namespace (clients reach it over the client link, PostgreSQL over the
    database link), agent B on the host, a topic led by both and a producer writing to it."""

    def __init__(self, inside: NamespacedServer, outside: StreamhouseServer, topic: str):
        self.inside, self.outside, self.topic = inside, outside, topic
        self.bootstrap = f"{inside.bootstrap},{outside.bootstrap}"
        create_topic(outside.bootstrap, topic, PARTITIONS)
        wait_for_leaders(self.bootstrap, topic, {0, 1})
        self.writer = ContinuousProducer(self.bootstrap, topic)
        self.writer.start()
        time.sleep(2)

    def finish(self) -> None:
        """Stops producing once every partition takes records; checks what was stored."""
        wait_until_all_take_records(self.writer, time.monotonic())
        self.writer.finish()
        assert self.inside.is_alive(), "the namespaced agent kept running"
        assert_exactly_once_in_order(self.outside.bootstrap, self.topic, self.writer.acked)


@pytest.fixture
def pair(namespace, reachable_postgres, binary, tmp_path, topic, server_factory, s3_server):
    if s3_server:
        # The agents share a local object root: the S3 test server on the host's loopback is
        # out of the namespace's reach, and an agent on S3 would not see the other's objects.
        pytest.skip("runs on a shared local object root in both modes")
    shared = tmp_path / "shared-objects"
    shared.mkdir()

    def args(node: int, url: str) -> list[str]:
        return ["--node-id", str(node), "--metadata-url", url,
                "--object-store-root", str(shared), "--lease-ttl-ms", str(LEASE_TTL_MS),
                "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS)]

    inside = NamespacedServer(binary, tmp_path / "agent-a", namespace=namespace,
                              host=CLIENT_NET[1],
                              extra_args=args(0, reachable_postgres.url_from(DB_NET[0])))
    try:
        inside.start()
        outside = server_factory(extra_args=args(1, reachable_postgres.url))
        yield Pair(inside, outside, topic)
    finally:
        inside.stop()


def test_agent_cut_from_postgres(pair, namespace, measurements):
    namespace.set_link("db", up=False)
    cut_at = time.monotonic()
    takeover_s = wait_until_all_take_records(pair.writer, cut_at + 0.5)
    leaders = wait_for_leaders(pair.outside.bootstrap, pair.topic, {1})
    assert set(leaders.values()) == {1}, leaders
    time.sleep(LEASE_TTL_MS / 1000)

    namespace.set_link("db", up=True)
    healed_at = time.monotonic()
    wait_for_leaders(pair.bootstrap, pair.topic, {0, 1})
    back_s = time.monotonic() - healed_at
    pair.finish()
    measurements[f"agent cut from PostgreSQL: every partition acknowledging again (lease "
                 f"TTL {LEASE_TTL_MS} ms)"] = f"{takeover_s:.2f} s after the cut"
    measurements["agent cut from PostgreSQL: partitions spread over both agents again"] = \
        f"{back_s:.2f} s after the heal"
    assert takeover_s < RECOVERY_LIMIT_S and back_s < RECOVERY_LIMIT_S


def test_agent_cut_from_its_clients(pair, namespace, measurements):
    """A keeps its leases (its database link is up), so its partitions are unavailable while its
    clients cannot reach it, as with a Kafka broker cut from clients but not from the
    controller; once the link heals every partition takes records again and nothing is lost."""
    namespace.set_link("cl", up=False)
    time.sleep(3 * LEASE_TTL_MS / 1000)
    namespace.set_link("cl", up=True)
    healed_at = time.monotonic()
    back_s = wait_until_all_take_records(pair.writer, healed_at)
    pair.finish()
    measurements["agent cut from its clients for 3 lease TTLs: every partition acknowledging "
                 "again"] = f"{back_s:.2f} s after the heal"
    assert back_s < RECOVERY_LIMIT_S


@pytest.fixture
def s3_pair(namespace, reachable_postgres, binary, tmp_path, topic, request):
    """The pair on one bucket of an S3 test server listening on the host side of the
    namespace's object-store link (B reaches that address locally, whatever the link does)."""
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    moto = MotoServer(tmp_path / "moto.log", host=S3_NET[0]).start()
    bucket = moto.create_bucket()
    servers: list[StreamhouseServer] = []
    request.node.streamhouse_servers = servers

    def args(node: int, url: str) -> list[str]:
        return [*moto.server_args(bucket), "--node-id", str(node), "--metadata-url", url,
                "--lease-ttl-ms", str(LEASE_TTL_MS),
                "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS)]

    servers.append(NamespacedServer(binary, tmp_path / "agent-a", namespace=namespace,
                                    host=CLIENT_NET[1],
                                    extra_args=args(0, reachable_postgres.url_from(DB_NET[0]))))
    servers.append(StreamhouseServer(binary, tmp_path / "agent-b",
                                     extra_args=args(1, reachable_postgres.url)))
    try:
        for server in servers:
            server.start()
        yield Pair(*servers, topic)
        assert moto.second_writes() == 0, "an object key was written twice"
    finally:
        for server in servers:
            server.stop()
        moto.stop()


def probe_produce(bootstrap: str, topic: str, partition: int) -> tuple[str | None, float]:
    """One record to `partition` with no client retries: the delivery error (None when
    acknowledged) and how long the answer took."""
    probe = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0,
                      "enable.idempotence": False, "request.timeout.ms": 4000,
                      "message.timeout.ms": 10000})
    outcome: list[str | None] = []
    started = time.monotonic()
    probe.produce(topic, value=b"probe", partition=partition,
                  on_delivery=lambda err, _msg: outcome.append(None if err is None else str(err)))
    probe.flush(30)
    assert outcome, "the probe got no delivery report"
    return outcome[0], time.monotonic() - started


def test_agent_cut_from_the_object_store(s3_pair, namespace, measurements):
    """A cannot upload while its object-store link is down: it acknowledges nothing for its
    partitions (it keeps their leases: its database link is up), answers its producers with
    errors, and takes records again once the link heals; B serves throughout; nothing is lost
    and no key is written twice."""
    pair = s3_pair
    leaders = wait_for_leaders(pair.bootstrap, pair.topic, {0, 1})
    mine = {p for p, node in leaders.items() if node == 0}
    theirs = set(leaders) - mine
    namespace.set_link("s3", up=False)
    cut_at = time.monotonic()
    error, answered_s = probe_produce(pair.inside.bootstrap, pair.topic, min(mine))
    assert error is not None, "a record was acknowledged while its object could not be stored"
    time.sleep(max(0.0, 2 * LEASE_TTL_MS / 1000 - (time.monotonic() - cut_at)))
    namespace.set_link("s3", up=True)
    healed_at = time.monotonic()
    back_s = wait_until_all_take_records(pair.writer, healed_at)
    # A second in: flushes uploaded before the cut may still commit (over the database link).
    window = (cut_at + 1.0, healed_at)
    acked_cut = acked_between(pair.writer, mine, *window)
    served = acked_between(pair.writer, theirs, *window)
    pair.finish()
    assert not acked_cut, f"partitions {acked_cut} acknowledged records during the cut"
    assert served == theirs, f"B's partitions {theirs - served} stalled"
    measurements["agent cut from the object store: a producer without retries answered with "
                  "an error"] = f"{answered_s:.2f} s after the cut ({error})"
    measurements[f"agent cut from the object store for {2 * LEASE_TTL_MS / 1000:.0f} s: every "
                  "partition acknowledging again"] = f"{back_s:.2f} s after the heal"
    assert back_s < RECOVERY_LIMIT_S
