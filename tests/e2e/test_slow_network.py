"""Delay and connection resets between an agent and the servers it depends on, made by a
userspace proxy (`tcp_proxy.py`; this kernel has no `sch_netem` for `tc netem`).

Agent A reaches PostgreSQL and the S3 test server through one proxy each; agent B reaches
them directly; an idempotent producer writes to a topic spread over both. Each fault lasts
five lease TTLs, then heals. Asserted: every acknowledged record is stored once, at its
acknowledged offset, in order, offsets dense (so no two agents accepted writes for one
partition at once: they would have acknowledged two records at one offset); every partition
takes records again within a stated time after the heal; A keeps running."""

from __future__ import annotations

import os
import threading
import time

import pytest

from harness import StreamhouseServer
from kafka_util import create_topic
from s3 import CREDENTIALS, MotoServer
from tcp_proxy import TcpProxy
from test_cluster import (HEARTBEAT_INTERVAL_MS, LEASE_TTL_MS, PARTITIONS, ContinuousProducer,
                          TempPostgres, assert_exactly_once_in_order, required_postgres_bin_dir,
                          wait_for_leaders)
from test_metadata_faults import longest_silence, wait_until_all_take_records

FAULT_S = 5 * LEASE_TTL_MS / 1000
# Every partition takes records again within this after the heal: lease TTLs for a takeover
# and back, plus the clients' backoff; generous.
RECOVERY_LIMIT_S = 6 * LEASE_TTL_MS / 1000 + 10
# Longest B's partitions may go unacknowledged while A's links misbehave; generous.
OTHER_AGENT_GAP_LIMIT_S = 3.0


class Setup:
    """A behind the proxies, B direct, the topic spread over both, a producer writing."""

    def __init__(self, a: StreamhouseServer, b: StreamhouseServer, proxies: list[TcpProxy],
                 topic: str):
        self.a, self.b, self.proxies, self.topic = a, b, proxies, topic
        self.moto: MotoServer | None = None
        self.bootstrap = f"{a.bootstrap},{b.bootstrap}"
        create_topic(b.bootstrap, topic, PARTITIONS)
        leaders = wait_for_leaders(self.bootstrap, topic, {0, 1})
        self.mine = {p for p, node in leaders.items() if node == 0}
        self.theirs = set(leaders) - self.mine
        self.writer = ContinuousProducer(self.bootstrap, topic)
        self.writer.start()
        time.sleep(2)

    def heal_and_check(self, healed_at: float) -> float:
        """Seconds from the heal until every partition took records again; then checks what
        was stored."""
        back_s = wait_until_all_take_records(self.writer, healed_at)
        self.writer.finish()
        assert self.a.is_alive(), "the agent behind the proxies kept running"
        assert_exactly_once_in_order(self.b.bootstrap, self.topic, self.writer.acked)
        return back_s


@pytest.fixture
def setup(binary, tmp_path, topic, request):
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    pg = TempPostgres(required_postgres_bin_dir()).start()
    moto = MotoServer(tmp_path / "moto.log").start()
    bucket = moto.create_bucket()
    pg_proxy = TcpProxy(("127.0.0.1", pg.port))
    s3_proxy = TcpProxy(("127.0.0.1", moto.port))
    servers: list[StreamhouseServer] = []
    request.node.streamhouse_servers = servers

    def args(node: int, pg_port: int, s3_port: int) -> list[str]:
        return ["--node-id", str(node),
                "--metadata-url", f"postgres://postgres@127.0.0.1:{pg_port}/postgres",
                "--s3-bucket", bucket, "--s3-endpoint", f"http://127.0.0.1:{s3_port}",
                "--s3-region", "us-east-1", "--lease-ttl-ms", str(LEASE_TTL_MS),
                "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS)]

    servers.append(StreamhouseServer(binary, tmp_path / "agent-a",
                                     extra_args=args(0, pg_proxy.port, s3_proxy.port)))
    servers.append(StreamhouseServer(binary, tmp_path / "agent-b",
                                     extra_args=args(1, pg.port, moto.port)))
    try:
        for server in servers:
            server.start()
        running = Setup(*servers, [pg_proxy, s3_proxy], topic)
        running.moto = moto
        yield running
        # A PUT whose connection is reset after the server stored it is retried create-only
        # and refused (412, as S3 would): allowed here; an attempted overwrite is not.
        assert moto.overwrites_refused() == 0, "an object key was overwritten"
    finally:
        for server in servers:
            server.stop()
        for proxy in (pg_proxy, s3_proxy):
            proxy.close()
        moto.stop()
        pg.stop()


def test_200_ms_added_to_every_round_trip(setup, measurements):
    """100 ms each way on A's connections to PostgreSQL and S3 (as `tc netem delay 200ms` on
    one side of the link) for five lease TTLs."""
    for proxy in setup.proxies:
        proxy.delay_s = 0.1
    started = time.monotonic()
    time.sleep(FAULT_S)
    for proxy in setup.proxies:
        proxy.delay_s = 0.0
    healed_at = time.monotonic()
    gap_a = longest_silence(setup.writer, setup.mine, started + 1, healed_at)
    gap_b = longest_silence(setup.writer, setup.theirs, started + 1, healed_at)
    back_s = setup.heal_and_check(healed_at)
    measurements[f"200 ms added to A's database and object-store round trips for {FAULT_S:.0f} "
                 "s: longest A's / B's partitions went unacknowledged"] = \
        f"{gap_a:.2f} s / {gap_b:.2f} s"
    assert gap_b < OTHER_AGENT_GAP_LIMIT_S, f"B's partitions went {gap_b:.2f} s unacknowledged"
    measurements["200 ms added delay: every partition acknowledging again after it ended"] = \
        f"{back_s:.2f} s"
    assert back_s < RECOVERY_LIMIT_S


def test_connections_reset_every_second(setup, measurements):
    """Every connection of A to PostgreSQL and S3 reset (RST) every second for five lease
    TTLs."""
    stop = threading.Event()
    resets = [0]

    def resetter() -> None:
        while not stop.wait(1.0):
            resets[0] += sum(proxy.reset_all() for proxy in setup.proxies)

    thread = threading.Thread(target=resetter, daemon=True)
    started = time.monotonic()
    thread.start()
    time.sleep(FAULT_S)
    stop.set()
    thread.join(10)
    healed_at = time.monotonic()
    gap_a = longest_silence(setup.writer, setup.mine, started + 1, healed_at)
    gap_b = longest_silence(setup.writer, setup.theirs, started + 1, healed_at)
    back_s = setup.heal_and_check(healed_at)
    assert resets[0] > 0, "no connection was reset"
    measurements[f"A's connections reset every second for {FAULT_S:.0f} s ({resets[0]} "
                 "resets): longest A's / B's partitions went unacknowledged"] = \
        f"{gap_a:.2f} s / {gap_b:.2f} s"
    assert gap_b < OTHER_AGENT_GAP_LIMIT_S, f"B's partitions went {gap_b:.2f} s unacknowledged"
    measurements["connection resets: every partition acknowledging again after they stopped"] = \
        f"{back_s:.2f} s"
    measurements["connection resets: create-only PUT retries refused (412) after a reset lost "
                 "the answer"] = str(setup.moto.second_writes())
    assert back_s < RECOVERY_LIMIT_S
